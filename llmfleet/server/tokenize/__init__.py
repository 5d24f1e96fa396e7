"""POST /tokenize and /detokenize: the server's tokenizer and chat template, without generating."""
