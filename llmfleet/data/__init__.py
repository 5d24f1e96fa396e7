"""Training data for the built-in demo models: a deterministic corpus from the interpreter's standard library."""
