"""`llmfleet distill`: train a small student of a teacher model on request logs or prompts (lifecycle/distill.py).

  llmfleet distill --teacher MODEL --data logs/ --student-config small.json --out DIR
  llmfleet distill --teacher MODEL --repo-prompts 3000 --student-config '{"num_hidden_layers": 4}' --out DIR
  llmfleet distill --teacher MODEL --student-config small.json --out DIR --init-only   # the untrained student
--data takes `llmfleet logs export` output (JSONL or parquet) or JSONL prompts; --repo-prompts builds prompts from
this repository's docs and code instead. The student config is a JSON object (a file or inline) of overrides of
the teacher's config, plus "teacher_layers" (which teacher layers initialise the student's) and "init"
("teacher" or "random").
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="distil a teacher model into a small student (a draft model)")
    p.add_argument("--teacher", required=True, help="the teacher: a Hugging Face folder")
    p.add_argument("--data", default=None, help="request-log exports or JSONL prompts (a file or folder)")
    p.add_argument("--repo-prompts", type=int, default=None, help="build this many prompts from the repository")
    p.add_argument("--student-config", required=True, help="JSON object (file or inline) of config overrides")
    p.add_argument("--out", required=True, help="folder for the student (a Hugging Face folder) and distill.json")
    p.add_argument("--init-only", action="store_true", help="save the initialised student untrained")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--alpha", type=float, default=0.8, help="weight of the KD loss (1 - alpha: cross-entropy)")
    p.add_argument("--top-k", type=int, default=32, help="teacher log-probabilities kept per position")
    p.add_argument("--max-prompt-tokens", type=int, default=256)
    p.add_argument("--max-new-tokens", type=int, default=192, help="length of the teacher's generated answers")
    p.add_argument("--held-out", type=float, default=0.05, help="fraction of examples held out for KL/agreement")
    p.add_argument("--max-seconds", type=float, default=None, help="stop training after this many seconds")
    p.add_argument("--device", default="auto")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.5, help="the teacher engine's share")
    p.add_argument("--seed", type=int, default=0)
    return p


def parse_student_config(text: str) -> dict:
    """A JSON object from a file path or inline text; ValueError naming --student-config otherwise."""
    path = Path(text)
    try:
        raw = path.read_text() if path.is_file() else text
        config = json.loads(raw)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--student-config: not a JSON file or JSON text ({e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"--student-config: must be a JSON object, got {type(config).__name__}")
    return config


def check_args(args) -> None:
    if not args.init_only and (args.data is None) == (args.repo_prompts is None):
        raise ValueError("--data / --repo-prompts: give exactly one of them")
    if args.data is not None and not Path(args.data).exists():
        raise ValueError(f"--data: {args.data} does not exist")
    if args.repo_prompts is not None and args.repo_prompts < 1:
        raise ValueError(f"--repo-prompts: must be positive, got {args.repo_prompts}")
    if not Path(args.teacher).is_dir():
        raise ValueError(f"--teacher: {args.teacher} is not a model folder")


def run(args) -> int:
    check_args(args)
    config = parse_student_config(args.student_config)
    from llmfleet.lifecycle.distill import build_student, distill, save_student
    if args.init_only:
        from transformers import AutoTokenizer
        student, copied = build_student(args.teacher, config, config.get("init", "teacher"), args.seed)
        save_student(student, AutoTokenizer.from_pretrained(args.teacher), args.out)
        print(f"untrained student ({sum(p.numel() for p in student.parameters())} parameters, {len(copied)} "
              f"tensors from the teacher) in {args.out}")
        return 0
    data = args.data
    if args.repo_prompts is not None:
        from llmfleet.lifecycle.prompts import repo_prompts
        data = repo_prompts(Path(__file__).resolve().parents[2], args.repo_prompts)
    engine_options = {"gpu_memory_utilization": args.gpu_memory_utilization} if args.device != "cpu" else {}
    record = distill(args.teacher, data, config, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                     alpha=args.alpha, top_k=args.top_k, max_prompt_tokens=args.max_prompt_tokens,
                     max_new_tokens=args.max_new_tokens, held_out=args.held_out, device=args.device,
                     max_seconds=args.max_seconds, engine_options=engine_options, seed=args.seed)
    held = record["held_out"]
    print(json.dumps({"student_parameters": record["student_parameters"], "steps_done": record["steps_done"],
                      "train_seconds": record["train_seconds"], "held_out": held}, indent=1))
    return 0
