"""`llmfleet prune --method magnitude|wanda --sparsity 2:4 MODEL --out DIR` (lifecycle/prune.py).

Writes a Hugging Face folder with 2 of every 4 weights of each decoder linear layer zeroed and
`"llmfleet_sparsity": "2:4"` in its config; `llmfleet serve DIR` then runs those layers as semi-structured sparse
matmuls on CUDA. Wanda scores weights by |W| times their input's norm over calibration text (this repository's
docs by default, or --calibration-file).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="2:4 prune a model's linear layers (magnitude or Wanda)")
    p.add_argument("model", help="a Hugging Face folder")
    p.add_argument("--method", default="wanda", choices=["magnitude", "wanda"])
    p.add_argument("--sparsity", default="2:4", help="the sparsity pattern (2:4 only)")
    p.add_argument("--out", required=True, help="folder for the pruned model")
    p.add_argument("--calibration-file", default=None, help="UTF-8 text for Wanda's activations")
    p.add_argument("--samples", type=int, default=64, help="calibration windows")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per calibration window")
    p.add_argument("--device", default="auto")
    return p


def run(args) -> int:
    if not Path(args.model).is_dir():
        raise ValueError(f"model: {args.model} is not a model folder")
    if args.sparsity != "2:4":
        raise ValueError(f"--sparsity: only 2:4 is supported, got {args.sparsity!r}")
    if args.samples < 1 or args.seq_len < 1:
        raise ValueError("--samples / --seq-len: must be positive")
    texts = None
    if args.calibration_file is not None:
        texts = [Path(args.calibration_file).read_text(errors="replace")]
    from llmfleet.lifecycle.prune import prune
    record = prune(args.model, args.method, args.out, args.sparsity, texts, args.samples, args.seq_len, args.device)
    print(json.dumps({k: v for k, v in record.items() if k != "zero_fraction"}, indent=1))
    return 0
