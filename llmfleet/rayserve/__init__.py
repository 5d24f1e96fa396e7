"""llmfleet on Ray Serve: each model version a deployment of llmfleet engines, the OpenAI API on Serve's proxy.

`from llmfleet.rayserve import build_app` (then `serve.run(build_app(config))`), or `llmfleet ray serve --config
fleet.yaml`; docs/ray_serve.md. Importing this package imports no Ray: `build_app` does, when first used.
"""
from __future__ import annotations


def __getattr__(name: str):
    if name in ("build_app", "run"):
        from llmfleet.rayserve import app

        return getattr(app, name)
    raise AttributeError(name)
