"""Evaluation: LLM-as-judge rubric scores and pairwise preference, drift monitoring (docs/evals.md)."""
