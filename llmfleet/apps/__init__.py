"""Applications over the OpenAI API: retrieval, semantic cache, conversation memory, evals (judge and drift)."""
