"""`llmfleet generate --model PATH --prompt "..."`: streams one completion to the terminal."""
from __future__ import annotations

import argparse
import sys


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="generate text for one prompt, streamed to the terminal")
    p.add_argument("--model", default="demo", help="model folder, demo model name, or benchmark shape")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    from llmfleet.entrypoints.serve import add_quantization_arguments
    add_quantization_arguments(p)


def run(args: argparse.Namespace) -> int:
    from llmfleet.protocol.config import EngineConfig
    from llmfleet.engine.llm_engine import LLMEngine
    from llmfleet.protocol.sampling_params import SamplingParams

    try:
        params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                                top_k=args.top_k, seed=args.seed, stop=args.stop)
        engine = LLMEngine(EngineConfig(model=args.model, device=args.device, dtype=args.dtype, max_num_seqs=1,
                                        quantization=args.quantization, kv_cache_dtype=args.kv_cache_dtype or "auto"))
        prompt = args.prompt
        if args.chat:
            text = engine.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                        add_generation_prompt=True, tokenize=False)
            prompt = engine.tokenizer.encode(text, add_special_tokens=False)
        engine.add_request("cli", prompt, params)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    printed = 0
    while engine.has_unfinished_requests():
        for output in engine.step():
            text = output.outputs[0].text
            sys.stdout.write(text[printed:])
            sys.stdout.flush()
            printed = len(text)
    sys.stdout.write("\n")
    return 0
