"""Train an EAGLE draft head for a target model from the model's own greedy generations.

    python scripts/train_eagle.py --model PATH --out DIR [--max-seconds 180] [--device cuda]

1. Prompts from this repository's material: random-id prompts shaped like the W0..W2 workloads (ids in [0, 10000),
   other seeds than the benchmarks'), the W7 editing prompts (the package's own source), docs/ paragraphs and files of
   Python's standard library (llmfleet/data/stdlib_corpus.py).
2. The target continues each greedily through llmfleet's own engine: what the head must predict is what the target
   itself says.
3. The head (model/models/eagle.py's layout: fc over [embed(x_{q+1}); f_q], one decoder layer without input norm) is
   trained on the target's final hidden states f (Hugging Face transformers, no gradient): smooth-L1 of its output
   against f_{q+1}, plus the cross-entropy of the target's lm_head over it against the target's own next-token
   distribution. Its layer starts as a copy of the target's last layer with zeroed output projections and fc as
   the identity on the feature half, so the untrained head already drafts "the token after this one again".
4. Writes DIR/model.safetensors (bf16, names as EAGLE checkpoints spell them), DIR/config.json (the target's config
   with one layer) and DIR/training.json (losses, top-1 agreement with the target on held-out sequences).
"""
from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_prompts(num_random: int, num_text: int, seed: int = 1) -> list:
    """Token-id prompts (lists) and text prompts (strings), interleaved deterministically."""
    rng = random.Random(seed)
    prompts: list = [[rng.randrange(10_000) for _ in range(rng.choice((64, 128, 256)))] for _ in range(num_random)]
    texts = _texts(num_text, rng)
    return prompts + texts


def _texts(count: int, rng: random.Random) -> list[str]:
    from llmfleet.bench.editing import editing_prompts
    texts = editing_prompts()[: count // 3]
    for path in sorted((ROOT / "docs").glob("*.md")):
        texts += [p for p in path.read_text(encoding="utf-8").split("\n\n") if len(p) > 200]
    if len(texts) < count:
        from llmfleet.data.stdlib_corpus import load_split
        texts += [f.text[:1500] for f in load_split("train")[: count]]
    rng.shuffle(texts)
    return texts[:count]


def generate(model: str, prompts: list, max_new: int, device: str) -> list[list[int]]:
    """prompt + the target's greedy continuation, as token ids, per prompt."""
    from llmfleet import LLM, SamplingParams
    llm = LLM(model, device=device, dtype="bfloat16" if device.startswith("cuda") else "float32",
              gpu_memory_utilization=0.3, max_model_len=2048)
    tok = llm.get_tokenizer()
    vocab = llm.engine.runner.info.vocab_size
    ids = [[t % vocab for t in p] if isinstance(p, list) else tok.encode(p)[:512] for p in prompts]
    outs = llm.generate(ids, SamplingParams(temperature=0, max_tokens=max_new), use_tqdm=False)
    seqs = [p + list(o.outputs[0].token_ids) for p, o in zip(ids, outs)]
    del llm, outs
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return seqs


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


def losses(head: TrainHead, target, ids: torch.Tensor, mask: torch.Tensor):
    """(smooth-L1 on features, soft cross-entropy, top-1 agreement) over positions q with q + 2 inside the text."""
    with torch.no_grad():
        f = target.model(input_ids=ids).last_hidden_state.float()                    # [B, L, H]
        p = target.lm_head(f[:, 1:].to(target.dtype)).float().softmax(-1)            # target's next-token dist
        embeds = target.model.embed_tokens(ids[:, 1:]).float()
    g = head(embeds, f[:, :-1])                                                       # estimates of f[:, 1:]
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
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW([p for n, p in head.named_parameters()], lr=args.lr, weight_decay=0.0)
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / max(1, args.warmup)))
    feed = batches(train_seqs, args.batch_size, args.length, gen)
    began, log = time.perf_counter(), []
    for step in range(args.steps):
        if time.perf_counter() - began > args.max_seconds:
            break
        ids, mask = next(feed)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            reg, ce, agree = losses(head, target, ids.to(device), mask.to(device))
            loss = reg + args.ce_weight * ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        warm.step()
        if step % 25 == 0 or step == args.steps - 1:
            log.append(dict(step=step, seconds=round(time.perf_counter() - began, 1), reg=round(reg.item(), 4),
                            ce=round(ce.item(), 4), agree=round(agree.item(), 4)))
            print(json.dumps(log[-1]), flush=True)
    return dict(log=log, steps=step + 1, seconds=round(time.perf_counter() - began, 1),
                val_agreement=evaluate(head, target, val_seqs, args, device))


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


def hf_folder(model: str) -> str:
    """A Hugging Face folder for `model`: itself, or a GGUF file's conversion (cached, as `llmfleet serve` does)."""
    if Path(model).is_file() and model.endswith(".gguf"):
        from llmfleet.entrypoints.default_model import default_cache_dir
        from llmfleet.model.gguf_export import cached_hf_folder
        return str(cached_hf_folder(Path(model), default_cache_dir() / "gguf"))
    return model


def sequences(args) -> list[list[int]]:
    """The training sequences: read from --cache if it exists, else generated (and written there)."""
    if args.cache is not None and args.cache.is_file():
        return json.loads(args.cache.read_text())
    seqs = generate(args.model, build_prompts(args.num_random, args.num_text), args.max_new, args.device)
    if args.cache is not None:
        args.cache.write_text(json.dumps(seqs))
    return seqs


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
