"""Speculative decoding, the engine's half: which sequences speculate, how many drafts, proposals that need only
token ids (n-gram prompt lookup), acceptance metrics. Proposers that run a model live in llmfleet.worker.spec_decode.
"""
