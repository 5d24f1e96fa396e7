"""A model's lifecycle after serving: distil request logs into a small draft model, prune a model to 2:4 sparsity.

`distill` trains a student on a teacher's answers (KD on the teacher's top-k log-probabilities plus cross-entropy);
`prune` writes a 2:4 sparse copy of a model that the engine serves with semi-structured sparse matmuls on CUDA.
"""
