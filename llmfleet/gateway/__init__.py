"""The fleet gateway: one OpenAI-compatible endpoint over many replicas (routing, retries, circuit breaking,
drain, prefix-aware placement from KV events). Imports no torch; see docs/gateway.md."""
