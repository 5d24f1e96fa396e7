"""Structured outputs: grammars from StructuredSpecs (grammar.py) and their per-sequence matchers (manager.py)."""
