"""`llmfleet bench perplexity`: perplexity of a model on a text file, through llmfleet's loader and model code.

`perplexity(model, text_file)` tokenizes the text, cuts it into windows of `window` tokens, prefills each window
through the paged-attention model exactly as the engine runs it, and averages the negative log-likelihood of every
token after each window's first. `transformers_perplexity` scores the same windows with transformers (a
Hugging Face folder, or a GGUF file converted by transformers' own GGUF code) as the reference. Any model llmfleet
loads works (folder, GGUF file, demo name), on any device; nothing assumes a GPU.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

BLOCK_SIZE = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a Hugging Face folder, a GGUF file, or a demo model name")
    parser.add_argument("--text-file", required=True, help="UTF-8 text to score")
    parser.add_argument("--window", type=int, default=512, help="tokens per scored window (default 512)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference", action="store_true", help="also score with transformers and compare")
    parser.add_argument("--quantization", default=None, choices=["int8", "int4", "fp8"],
                        help="quantize the linear layers at load (on CPU: the methods' reference paths)")
    parser.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "fp8"])


def run(args: argparse.Namespace) -> int:
    """Print a JSON record: llmfleet's perplexity (and transformers' with --reference)."""
    record = {"model": args.model, "text_file": args.text_file, "window": args.window, "dtype": args.dtype,
              "quantization": args.quantization, "kv_cache_dtype": args.kv_cache_dtype}
    record["llmfleet"] = perplexity(args.model, args.text_file, args.window, args.dtype, args.device,
                                    args.quantization, args.kv_cache_dtype)
    if args.reference:
        record["transformers"] = transformers_perplexity(args.model, args.text_file, args.window)
    print(json.dumps(record, indent=2))
    return 0


def perplexity(model: str, text_file: str | Path, window: int = 512, dtype: str = "float32",
               device: str = "cpu", quantization: str | None = None, kv_cache_dtype: str = "auto") -> dict:
    """{"tokens": scored tokens, "nll": mean negative log-likelihood, "perplexity": exp(nll), "seconds": ...}.

    quantization: int8 | int4 | fp8 linear layers, quantized at load; kv_cache_dtype "fp8": the prefill writes its
    keys and values into an fp8 cache and attends over what it reads back, as serving does."""
    from llmfleet.model.loader import load_model
    from llmfleet.model.source import resolve_model

    source = resolve_model(model)
    began = time.perf_counter()
    net, _, _ = load_model(source.path, getattr(torch, dtype), device, hf_config=source.hf_config,
                           quantization=quantization)
    windows = token_windows(source.tokenizer, text_file, window)
    cache_dtype = torch.float8_e4m3fn if kv_cache_dtype == "fp8" else None
    return _score(lambda ids: paged_prefill_logits(net, ids, device, cache_dtype), windows, began)


def transformers_perplexity(model: str, text_file: str | Path, window: int = 512) -> dict:
    """The same score from transformers in float32 on the CPU: the reference `perplexity` must agree with."""
    from llmfleet.model.source import resolve_model

    source = resolve_model(model)
    began = time.perf_counter()
    net = transformers_model(source.path)
    windows = token_windows(source.tokenizer, text_file, window)
    return _score(lambda ids: net(torch.tensor([ids])).logits[0], windows, began)


def token_windows(tokenizer, text_file: str | Path, window: int) -> list[list[int]]:
    """The text's token ids (no special tokens) cut into windows of `window` (the last one may be shorter)."""
    if window < 2:
        raise ValueError(f"window: must be at least 2 tokens, got {window}")
    ids = tokenizer.encode(Path(text_file).read_text(encoding="utf-8"), add_special_tokens=False)
    if len(ids) < 2:
        raise ValueError(f"text_file: {text_file} holds fewer than 2 tokens")
    return [ids[i:i + window] for i in range(0, len(ids) - 1, window) if len(ids[i:i + window]) > 1]


def paged_prefill_logits(model, ids: list[int], device: str = "cpu",
                         cache_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Logits [T, V] of one sequence prefilled into a fresh paged KV cache (in the model's dtype, or
    `cache_dtype`), as one engine step would run it."""
    from llmfleet.model.layers.attention import AttentionMetadata

    t = len(ids)
    num_blocks = -(-t // BLOCK_SIZE)
    dtype = cache_dtype or next(model.parameters()).dtype
    for attn in model.attention_layers():
        attn.kv_cache = torch.zeros(2, num_blocks, BLOCK_SIZE, attn.num_kv_heads, attn.head_dim, dtype=dtype,
                                    device=device)
    meta = AttentionMetadata(
        num_seqs=1, num_decodes=0, max_query_len=t, max_seq_len=t,
        query_start_loc=torch.tensor([0, t], dtype=torch.int32, device=device),
        seq_lens=torch.tensor([t], dtype=torch.int32, device=device),
        block_tables=torch.arange(num_blocks, dtype=torch.int32, device=device)[None],
        slot_mapping=torch.arange(t, device=device), query_start_loc_cpu=[0, t], seq_lens_cpu=[t])
    tokens = torch.tensor(ids, device=device)
    return model.compute_logits(model(tokens, torch.arange(t, device=device), meta))


def _score(logits_of, windows: list[list[int]], began: float) -> dict:
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in windows:
            logprobs = torch.log_softmax(logits_of(ids)[:-1].float(), dim=-1)        # [T - 1, V]
            targets = torch.tensor(ids[1:], device=logprobs.device)
            total -= logprobs.gather(1, targets[:, None]).sum().item()
            count += len(ids) - 1
    nll = total / count
    return {"tokens": count, "nll": nll, "perplexity": math.exp(nll),
            "seconds": round(time.perf_counter() - began, 2)}


def transformers_model(path: str):
    """The transformers model (float32, CPU) of a Hugging Face folder, or of a GGUF file converted by transformers'
    own GGUF code (config, tensor names, q/k permutation, dequantization)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    file = Path(path)
    if file.suffix != ".gguf":
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    # from_pretrained(gguf_file=...) insists on `accelerate`; the conversion itself does not need it.
    config = AutoConfig.from_pretrained(str(file.parent), gguf_file=file.name)
    net = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    tensors = load_gguf_checkpoint(str(file), return_tensors=True, model_to_load=net)["tensors"]
    if config.tie_word_embeddings:
        tensors.setdefault("lm_head.weight", tensors["model.embed_tokens.weight"])
    net.load_state_dict(tensors, strict=True)
    return net
