"""Train one demo model (Llama architecture) on the tokenised stdlib corpus and save it as a Hugging Face folder.

    python scripts/train_demo.py --name demo --data .demo_data --steps 3000 --out /tmp/models/demo \
        --log benchmarks/results/demo_training/demo.json

Plain PyTorch over transformers' LlamaForCausalLM: fixed seed, bf16 autocast over float32 weights, AdamW with linear
warm-up then cosine decay, residual dropout (the corpus is small, so the model sees it many times), windows of 512
tokens drawn without replacement within each epoch. The saved weights are bf16; the validation perplexity written
to the log is measured on those bf16 weights in float32 arithmetic, the way a CPU test recomputes it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
EOT_ID, IM_END_ID, PAD_ID = 0, 2, 3
SEQ_LEN = 512
SAMPLE_PROMPTS = ("def fibonacci(n):\n", "import os\n\n\ndef list_files(path):\n", "class Stack:\n")
REPORT_WINDOWS = 64  # validation windows [0, 64) are reported; the rest pick the best checkpoint
PRESETS = {
    "demo": dict(hidden_size=384, intermediate_size=832, num_hidden_layers=6, num_attention_heads=6,
                 num_key_value_heads=2),
    "demo-draft": dict(hidden_size=192, intermediate_size=384, num_hidden_layers=4, num_attention_heads=3,
                       num_key_value_heads=1),
}


def build_config(name: str, vocab_size: int) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab_size, head_dim=64, max_position_embeddings=SEQ_LEN, rope_theta=10000.0,
                       rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=EOT_ID, eos_token_id=EOT_ID,
                       pad_token_id=PAD_ID, **PRESETS[name])


def add_residual_dropout(model: LlamaForCausalLM, p: float) -> None:
    """Dropout on each attention and MLP output before it joins the residual stream (active in train mode only)."""
    def hook(module, _inputs, output):
        if not module.training or p == 0.0:
            return output
        if isinstance(output, tuple):
            return (F.dropout(output[0], p, True),) + tuple(output[1:])
        return F.dropout(output, p, True)
    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(hook)
        layer.mlp.register_forward_hook(hook)


class EpochSampler:
    """Batches of SEQ_LEN+1 token windows; each epoch shifts the window grid randomly and shuffles the windows."""

    def __init__(self, stream: torch.Tensor, batch_size: int, gen: torch.Generator):
        self.stream, self.batch_size, self.gen = stream, batch_size, gen
        self.order = torch.empty(0, dtype=torch.long)
        self.epochs = 0

    def next_batch(self) -> torch.Tensor:
        while self.order.numel() < self.batch_size:
            shift = int(torch.randint(SEQ_LEN, (1,), generator=self.gen))
            count = (self.stream.numel() - shift - 1) // SEQ_LEN
            starts = shift + SEQ_LEN * torch.randperm(count, generator=self.gen)
            self.order = torch.cat([self.order, starts])
            self.epochs += 1
        starts, self.order = self.order[:self.batch_size], self.order[self.batch_size:]
        index = starts[:, None] + torch.arange(SEQ_LEN + 1)[None, :]  # [B, L+1]
        return self.stream[index]


def lr_at(step: int, steps: int, warmup: int, peak: float, floor: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def window_losses(model: LlamaForCausalLM, windows: torch.Tensor, autocast: bool, batch: int = 16) -> list[float]:
    """Mean next-token NLL of each window. windows: int64 [W, L+1] on the model's device."""
    model.eval()
    out = []
    for chunk in windows.split(batch):
        with torch.autocast(windows.device.type, torch.bfloat16, enabled=autocast):
            logits = model(input_ids=chunk[:, :-1]).logits  # [b, L, V]
        nll = F.cross_entropy(logits.float().transpose(1, 2), chunk[:, 1:], reduction="none")  # [b, L]
        out.extend(nll.mean(dim=1).tolist())
    model.train()
    return out


def train_step(model, opt, batch: torch.Tensor) -> torch.Tensor:
    """One optimiser step on batch [B, L+1]; returns the loss as a device tensor (no host sync)."""
    with torch.autocast(batch.device.type, torch.bfloat16):
        logits = model(input_ids=batch[:, :-1]).logits  # [B, L, V]
    loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.detach()


def train(args, model, train_stream, val_windows, device) -> dict:
    """Run the schedule; keep the weights with the lowest loss on the selection windows (val windows 64 and up)."""
    sampler = EpochSampler(train_stream, args.batch_size, torch.Generator().manual_seed(args.seed))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay,
                            fused=device.type == "cuda")
    select = val_windows[REPORT_WINDOWS:]
    curve, best, steps_done = [], {"loss": float("inf"), "step": -1, "state": None}, 0
    start = time.perf_counter()
    while steps_done < args.steps:
        out_of_time = args.max_seconds and time.perf_counter() - start > args.max_seconds
        if not out_of_time:
            for group in opt.param_groups:
                group["lr"] = lr_at(steps_done, args.steps, args.warmup, args.lr, args.lr * args.min_lr_ratio)
            loss = train_step(model, opt, sampler.next_batch().to(device, non_blocking=True))
            steps_done += 1
        if out_of_time or steps_done % args.eval_every == 0 or steps_done == args.steps:
            sel = float(np.mean(window_losses(model, select, autocast=True)))  # the only host syncs
            curve.append({"step": steps_done, "tokens": steps_done * args.batch_size * SEQ_LEN,
                          "epochs": sampler.epochs, "train_loss": round(loss.item(), 4),
                          "select_loss": round(sel, 4), "seconds": round(time.perf_counter() - start, 1)})
            print(json.dumps(curve[-1]), flush=True)
            if sel < best["loss"]:
                best = {"loss": sel, "step": steps_done,
                        "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        if out_of_time:
            break
    model.load_state_dict(best["state"])
    return {"curve": curve, "steps_done": steps_done, "best_step": best["step"],
            "best_select_loss": round(best["loss"], 5), "train_seconds": round(time.perf_counter() - start, 1),
            "epochs": sampler.epochs, "stopped_early": steps_done < args.steps}


def greedy_samples(model: LlamaForCausalLM, folder: Path, max_new_tokens: int = 96) -> list[dict]:
    """Greedy continuations of SAMPLE_PROMPTS, each with whether prompt + its complete lines compile."""
    from transformers import AutoTokenizer
    tok, out = AutoTokenizer.from_pretrained(str(folder)), []
    for prompt in SAMPLE_PROMPTS:
        ids = torch.tensor([tok.encode(prompt)], device=model.device)
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
        text = tok.decode(gen[0, ids.shape[1]:])
        try:
            compile(prompt + text[:text.rfind("\n") + 1], "<sample>", "exec")
            compiles = True
        except SyntaxError:
            compiles = False
        out.append({"prompt": prompt, "text": text, "compiles": compiles})
    return out


def save_folder(model: LlamaForCausalLM, out: Path, tokenizer_dir: Path) -> None:
    """config.json (+ top-level rope_theta for older readers), generation_config.json, bf16 safetensors, tokenizer."""
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True)
    GenerationConfig(bos_token_id=EOT_ID, eos_token_id=[EOT_ID, IM_END_ID],
                     pad_token_id=PAD_ID).save_pretrained(str(out))
    config = json.loads((out / "config.json").read_text())
    config["rope_theta"] = config.get("rope_parameters", {}).get("rope_theta", 10000.0)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, out / name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", choices=sorted(PRESETS), required=True)
    parser.add_argument("--data", type=Path, default=Path(".demo_data"))
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--log", type=Path, required=True, help="training JSON to write")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--min-lr-ratio", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=0.0, help="stop training after this long (0: never)")
    parser.add_argument("--git-commit", default="unknown")
    args = parser.parse_args()
    for field in ("steps", "batch_size", "warmup", "eval_every"):
        if getattr(args, field) < 1:
            raise ValueError(f"{field}: must be >= 1, got {getattr(args, field)}")
    if not 0.0 <= args.dropout < 1.0:
        raise ValueError(f"dropout: must be in [0, 1), got {args.dropout}")

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    train_stream = torch.from_numpy(np.load(args.data / "train.npy").astype(np.int64))
    val_stream = np.load(args.data / "validation.npy")
    num_windows = (val_stream.shape[0] - 1) // SEQ_LEN
    if num_windows <= REPORT_WINDOWS:
        raise ValueError(f"data: validation stream has {num_windows} windows, more than {REPORT_WINDOWS} needed")
    index = np.arange(num_windows)[:, None] * SEQ_LEN + np.arange(SEQ_LEN + 1)[None, :]
    val_windows = torch.from_numpy(val_stream[index].astype(np.int64)).to(device)  # [W, L+1]

    config = build_config(args.name, vocab_size=8192)
    model = LlamaForCausalLM(config).to(device)
    add_residual_dropout(model, args.dropout)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.name}: {params} parameters on {device}", flush=True)
    result = train(args, model, train_stream, val_windows, device)

    save_folder(model, args.out, args.data / "tokenizer")
    reloaded = LlamaForCausalLM.from_pretrained(str(args.out), dtype=torch.float32).to(device)
    losses = window_losses(reloaded, val_windows[:REPORT_WINDOWS], autocast=False)
    samples = greedy_samples(reloaded, args.out)
    log = {
        "name": args.name, "command": " ".join(sys.argv), "git_commit": args.git_commit,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "python": platform.python_version(), "parameters": params,
        "config": PRESETS[args.name], "seq_len": SEQ_LEN, "batch_size": args.batch_size, "steps": args.steps,
        "steps_done": result["steps_done"], "tokens_seen": result["steps_done"] * args.batch_size * SEQ_LEN,
        "train_tokens": int(train_stream.numel()),
        "hyperparameters": {k: getattr(args, k) for k in ("lr", "min_lr_ratio", "warmup", "weight_decay",
                                                           "dropout", "seed")},
        "wall_seconds": result["train_seconds"], "epochs": result["epochs"], "best_step": result["best_step"],
        "best_select_loss": result["best_select_loss"], "stopped_early": result["stopped_early"],
        "val_windows": REPORT_WINDOWS, "val_loss": float(np.mean(losses)), "val_ppl": math.exp(np.mean(losses)),
        "val_window_losses": [round(x, 6) for x in losses], "curve": result["curve"],
        "samples": samples,
        "corpus": json.loads((args.data / "corpus.json").read_text()),
    }
    args.log.parent.mkdir(parents=True, exist_ok=True)
    args.log.write_text(json.dumps(log, indent=2) + "\n")
    print(f"{args.name}: val ppl {log['val_ppl']:.3f} over {REPORT_WINDOWS} windows, best step {log['best_step']}, "
          f"{log['tokens_seen']} tokens in {log['wall_seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
