"""Speculative decoding, the worker's half: verifying draft tokens against the target's logits (rejection.py) and
proposers that run a model (draft_model.py). The engine's half (which sequences speculate, n-gram lookup, metrics)
is llmfleet.engine.spec_decode."""
