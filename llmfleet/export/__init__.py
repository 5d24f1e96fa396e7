"""Edge export: the Llama family as ONNX with explicit KV-cache inputs/outputs, run by onnxruntime (CPU) and by
onnxruntime-web in a browser page (static/). See docs/onnx_export.md."""
