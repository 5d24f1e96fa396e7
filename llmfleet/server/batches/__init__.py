"""The batch API: /v1/files (JSONL inputs and results on disk, metadata in SQLite) and /v1/batches (requests run
through the same serving code as the HTTP routes, with bounded concurrency), and the offline `llmfleet run-batch`."""
