"""Train an EAGLE draft head for a target model from the model's own greedy generations.

    python scripts/train_eagle.py --model PATH --out DIR [--max-seconds 180] [--device cuda]

Prompts from this repository's material (random-id prompts shaped like W0..W2 with other seeds, the W7 editing
prompts, docs/ paragraphs, standard-library files) are continued greedily by llmfleet's engine, EOS ignored. The head
(model/models/eagle.py: fc over [embed(x_{q+1}); f_q], one decoder layer without input norm) learns from the
target's final hidden states f (transformers, no gradient): smooth-L1 against f_{q+1} in units of f's spread, plus
the cross-entropy of the target's lm_head over its output against the target's next-token distribution. It starts
as the target's last layer with zeroed output projections and fc as the identity on the feature half. Writes
DIR/model.safetensors (bf16, EAGLE's tensor names), DIR/config.json (the target's, one layer), DIR/training.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from eagle_data import hf_folder, sequences  # noqa: E402  (the generated training sequences)


class _Layer(nn.Module):
    """EAGLE's layer 0 (no input norm), named as checkpoints name it; plain torch, for training."""

    def __init__(self, cfg):
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm
        h, d = cfg.hidden_size, getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, d
        bias = bool(getattr(cfg, "attention_bias", False))
        self.self_attn = nn.Module()
        self.self_attn.q_proj = nn.Linear(h, self.heads * d, bias=bias)
        self.self_attn.k_proj = nn.Linear(h, self.kv_heads * d, bias=bias)
        self.self_attn.v_proj = nn.Linear(h, self.kv_heads * d, bias=bias)
        self.self_attn.o_proj = nn.Linear(self.heads * d, h, bias=bias)
        self.post_attention_layernorm = LlamaRMSNorm(h, eps=cfg.rms_norm_eps)
        self.mlp = LlamaMLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
        b, t, _ = x.shape
        a = self.self_attn
        q = a.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)        # [B, Hq, T, D]
        k = a.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = a.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        group = self.heads // self.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = a.o_proj(attn.transpose(1, 2).reshape(b, t, -1)) + x
        return self.mlp(self.post_attention_layernorm(h)) + h


class TrainHead(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
        self.fc = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=True)
        self.layers = nn.ModuleList([_Layer(cfg)])
        self.rotary = LlamaRotaryEmbedding(config=cfg)

    def forward(self, embeds: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """embeds, features: [B, T, H] (position q: embed(x_{q+1}), f_q) -> estimates of f_{q+1} [B, T, H]."""
        x = self.fc(torch.cat([embeds, features], dim=-1))
        positions = torch.arange(x.shape[1], device=x.device)[None].expand(x.shape[0], -1)
        cos, sin = self.rotary(x, positions)
        return self.layers[0](x, cos, sin)

    def init_from(self, target) -> None:
        """Layer 0 = the target's last layer with its output projections zeroed, fc = identity on the feature half
        and small on the embedding half: the untrained head returns its input feature (next = this position's)."""
        last = target.model.layers[-1]
        mine = self.layers[0]
        with torch.no_grad():
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                getattr(mine.self_attn, name).load_state_dict(getattr(last.self_attn, name).state_dict())
            mine.mlp.load_state_dict(last.mlp.state_dict())
            mine.post_attention_layernorm.load_state_dict(last.post_attention_layernorm.state_dict())
            h = self.fc.out_features
            self.fc.weight.normal_(0, 0.02 / h ** 0.5)
            self.fc.weight[:, h:] += torch.eye(h, device=self.fc.weight.device)
            self.fc.bias.zero_()
            mine.self_attn.o_proj.weight.zero_()
            mine.mlp.down_proj.weight.zero_()

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("rotary.")}


def batches(seqs: list[list[int]], batch: int, length: int, gen: torch.Generator):
    """Endless random batches: (ids [B, L] right-padded with 0, valid mask [B, L])."""
    while True:
        pick = torch.randint(len(seqs), (batch,), generator=gen).tolist()
        ids = torch.zeros(batch, length, dtype=torch.long)
        mask = torch.zeros(batch, length, dtype=torch.bool)
        for row, i in enumerate(pick):
            s = seqs[i][:length]
            ids[row, :len(s)] = torch.tensor(s)
            mask[row, :len(s)] = True
        yield ids, mask


def losses(head: TrainHead, target, ids: torch.Tensor, mask: torch.Tensor, noise: float = 0.0):
    """(smooth-L1 on features, soft cross-entropy, top-1 agreement) over positions q with q + 2 inside the text.
    noise: uniform noise of that many feature spreads on the head's input features (robustness to its own
    estimates, which chained drafts feed back)."""
    with torch.no_grad():
        f = target.model(input_ids=ids).last_hidden_state.float()                    # [B, L, H]
        p = target.lm_head(f[:, 1:].to(target.dtype)).float().softmax(-1)            # target's next-token dist
        embeds = target.model.embed_tokens(ids[:, 1:]).float()
        given = f[:, :-1]
        if noise:
            given = given + (torch.rand_like(given) * 2 - 1) * noise * f.std()
    g = head(embeds, given)                                                           # estimates of f[:, 1:]
    valid = (mask[:, 1:] & mask[:, :-1]).float()
    if valid.shape[1] > 0:
        valid[:, -1] = 0                                                              # its target token is unknown
    n = valid.sum().clamp(min=1)
    scale = f.std().clamp(min=1e-3)   # features in units of their spread (a model's final norm sets their size)
    reg = (F.smooth_l1_loss(g / scale, f[:, 1:] / scale, reduction="none").mean(-1) * valid).sum() / n
    logq = F.log_softmax(target.lm_head(g.to(target.dtype)).float(), dim=-1)
    ce = (-(p * logq).sum(-1) * valid).sum() / n
    agree = ((logq.argmax(-1) == p.argmax(-1)).float() * valid).sum() / n
    return reg, ce, agree


def train(head, target, train_seqs, val_seqs, args, device) -> dict:
    """AdamW with a linear warm-up until --steps or --max-seconds; every --eval-every steps the held-out top-1
    agreement is measured and the best weights so far kept (they are what is returned in `head`)."""
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=0.0)
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / max(1, args.warmup)))
    feed = batches(train_seqs, args.batch_size, args.length, gen)
    began, log, evals = time.perf_counter(), [], []
    best = (evaluate(head, target, val_seqs, args, device), copy.deepcopy(head.state_dict()))
    step = 0
    for step in range(1, args.steps + 1):
        if time.perf_counter() - began > args.max_seconds:
            break
        reg, ce, agree = _train_step(head, target, opt, next(feed), args, device)
        warm.step()
        if step % 25 == 0 or step == args.steps:
            log.append(dict(step=step, seconds=round(time.perf_counter() - began, 1), reg=round(reg.item(), 4),
                            ce=round(ce.item(), 4), agree=round(agree.item(), 4)))
            print(json.dumps(log[-1]), flush=True)
        if step % args.eval_every == 0:
            evals.append((step, evaluate(head, target, val_seqs, args, device)))
            if evals[-1][1] > best[0]:
                best = (evals[-1][1], copy.deepcopy(head.state_dict()))
    final = evaluate(head, target, val_seqs, args, device)
    if final < best[0]:
        head.load_state_dict(best[1])
    return dict(log=log, evals=evals, steps=step, seconds=round(time.perf_counter() - began, 1),
                val_agreement=max(final, best[0]), val_agreement_final=final)


def _train_step(head, target, opt, batch, args, device):
    ids, mask = batch
    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        reg, ce, agree = losses(head, target, ids.to(device), mask.to(device), noise=args.noise)
        loss = reg + args.ce_weight * ce
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
    opt.step()
    return reg, ce, agree


@torch.no_grad()
def evaluate(head, target, seqs, args, device) -> float:
    """Top-1 agreement of the head (one step, true features) with the target on held-out sequences."""
    feed = batches(seqs, min(args.batch_size, len(seqs)), args.length, torch.Generator().manual_seed(1))
    scores = []
    for _ in range(max(1, min(8, len(seqs) // max(1, args.batch_size)))):
        ids, mask = next(feed)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            scores.append(losses(head, target, ids.to(device), mask.to(device))[2].item())
    return round(sum(scores) / len(scores), 4)


def save(head: TrainHead, target_folder: Path, out: Path) -> None:
    from safetensors.torch import save_file
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.bfloat16).contiguous().cpu() for k, v in head.checkpoint_state().items()}
    save_file(state, str(out / "model.safetensors"))
    config = json.loads((target_folder / "config.json").read_text())
    config.update(num_hidden_layers=1, tie_word_embeddings=False, torch_dtype="bfloat16")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="the target: a Hugging Face folder or a GGUF file")
    p.add_argument("--out", type=Path, required=True, help="folder to write the head into")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--num-random", type=int, default=1024)
    p.add_argument("--num-text", type=int, default=1024)
    p.add_argument("--max-new", type=int, default=384, help="tokens the target generates per prompt")
    p.add_argument("--cache", type=Path, default=None, help="JSON of generated sequences: read if it exists, "
                   "else written")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--warmup", type=int, default=200, help="steps of linear learning-rate warm-up")
    p.add_argument("--max-seconds", type=float, default=180.0, help="training time limit")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--length", type=int, default=640)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--ce-weight", type=float, default=0.5)
    p.add_argument("--noise", type=float, default=0.05, help="input-feature noise, in feature spreads")
    p.add_argument("--eval-every", type=int, default=500, help="steps between held-out evaluations")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoModelForCausalLM
    args = parse_args(argv)
    args.model = hf_folder(args.model)
    began = time.perf_counter()
    seqs = sequences(args)
    generated_s = time.perf_counter() - began
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    target = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(args.device).eval()
    target.requires_grad_(False)
    head = TrainHead(target.config).to(args.device)
    head.init_from(target)
    head.float()
    random.Random(0).shuffle(seqs)     # held-out sequences of every kind
    held = max(1, len(seqs) // 20)
    result = train(head, target, seqs[held:], seqs[:held], args, args.device)
    save(head, Path(args.model), args.out)
    result.update(model=args.model, sequences=len(seqs), generate_seconds=round(generated_s, 1),
                  tokens=sum(map(len, seqs)), args={k: str(v) for k, v in vars(args).items()})
    (args.out / "training.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"head written to {args.out}: val top-1 agreement {result['val_agreement']}, {result['steps']} steps "
          f"in {result['seconds']} s, generation {generated_s:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
