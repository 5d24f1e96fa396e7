"""The operator console: live charts of a fleet (or one replica), its spend and budgets, and drain actions.

Mounted as pure-ASGI middleware on the gateway and on `llmfleet serve`; everything is computed from Prometheus
scrapes (the host's own registry and, on the gateway, each replica's /metrics) sampled into an in-memory ring
buffer, and served as JSON under /console/api/ to a static page (uPlot charts) and to `llmfleet top`.
Imports neither torch nor FastAPI: the gateway mounts it too.
"""
