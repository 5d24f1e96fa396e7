"""`llmfleet export onnx [MODEL] --out DIR` and `llmfleet export serve-page DIR`.

MODEL defaults to the default model (SmolLM2-135M-Instruct, see default_model.py). The page server runs until
interrupted; open the printed address in a browser.
"""
from __future__ import annotations

import argparse
import json
import threading


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register `llmfleet export` and its subcommands."""
    parser = subparsers.add_parser(name, help="export a model for edge runtimes (ONNX, browser)")
    sub = parser.add_subparsers(dest="export_command", required=True)
    onnx = sub.add_parser("onnx", help="ONNX with KV-cache inputs/outputs (+ int8 dynamic quantization)")
    onnx.add_argument("model", nargs="?", default=None, help="HF folder or GGUF file (default: the default model)")
    onnx.add_argument("--out", required=True, help="output folder")
    onnx.add_argument("--no-int8", action="store_true", help="skip model.int8.onnx")
    page = sub.add_parser("serve-page", help="serve the browser page (onnxruntime-web) for an export folder")
    page.add_argument("export_dir")
    page.add_argument("--host", default="127.0.0.1")
    page.add_argument("--port", type=int, default=8900)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.export_command == "onnx":
        from llmfleet.entrypoints.default_model import resolve_served_model
        from llmfleet.export.onnx_export import META_FILE, export_onnx

        model, _ = resolve_served_model(args.model)
        out = export_onnx(model, args.out, int8=not args.no_int8)
        print(json.dumps(json.loads((out / META_FILE).read_text())["files"]), "written to", out)
        return 0
    from llmfleet.export.web import start_page_server

    server = start_page_server(args.export_dir, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"http://{host}:{port}/  (Ctrl-C stops)")
    try:
        threading.Event().wait()  # the server runs on its own thread until Ctrl-C
    except KeyboardInterrupt:
        server.shutdown()
    return 0
