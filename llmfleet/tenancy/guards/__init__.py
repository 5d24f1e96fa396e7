"""Guards on prompts and answers: PII detection (with checksums where the format has one) and what to do on a hit:
block, mask, or log."""
