"""What the completion and chat endpoints share: schemas, sampling, prompts, logprobs, streaming, generation."""
