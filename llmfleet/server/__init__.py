"""One replica's OpenAI-compatible HTTP server: `create_app` (app.py), `serve` (runner.py), `llmfleet serve` (cli.py).

See docs/server.md.
"""
