"""`distill(teacher, data, student_config, out)`: train a small student (same tokenizer) to imitate a teacher.

Steps: read prompts (request-log exports or JSONL), let the teacher answer the ones without an answer (llmfleet's
engine, greedy), store the teacher's top-k log-probabilities at every answer position (transformers forward pass),
then train the student on loss = alpha * KD + (1 - alpha) * CE, where KD is the cross-entropy of the student's
log-probabilities against the teacher's top-k distribution (renormalised over its k tokens) and CE that of the
answer tokens. The student is the teacher's config with the overrides of `student_config`; every student tensor
whose teacher counterpart has the same shape starts from it (the embeddings, the final norm, and the teacher
layers listed in "teacher_layers", default evenly spaced), unless init="random". Held-out prompts measure the
full-vocabulary KL(teacher || student) and the top-1 agreement before and after training. The result is a normal
Hugging Face folder (bf16 safetensors, config, tokenizer) plus distill.json, the training record.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from llmfleet.lifecycle.distill_data import (Example, add_teacher_topk, answer_logits, batches, collate,
                                             generate_answers, read_rows, row_to_example)

STUDENT_KEYS = ("teacher_layers", "init")  # entries of a student config that are not transformers config fields


def build_student(teacher_path: str, overrides: dict, init: str = "teacher", seed: int = 0):
    """(student model in float32, names of the tensors copied from the teacher)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    if init not in ("teacher", "random"):
        raise ValueError(f"init: must be 'teacher' or 'random', got {init!r}")
    config = AutoConfig.from_pretrained(teacher_path)
    teacher_layers = overrides.get("teacher_layers")
    for key, value in overrides.items():
        if key not in STUDENT_KEYS:
            if not hasattr(config, key):
                raise ValueError(f"student_config.{key}: not a field of the teacher's {type(config).__name__}")
            setattr(config, key, value)
    layers = config.num_hidden_layers
    teacher_total = AutoConfig.from_pretrained(teacher_path).num_hidden_layers
    if teacher_layers is None:
        teacher_layers = [round(i * (teacher_total - 1) / max(layers - 1, 1)) for i in range(layers)]
    if len(teacher_layers) != layers or not all(0 <= t < teacher_total for t in teacher_layers):
        raise ValueError(f"student_config.teacher_layers: need {layers} indices in [0, {teacher_total}), "
                         f"got {teacher_layers}")
    torch.manual_seed(seed)
    student = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    copied = []
    if init == "teacher":
        teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.float32)
        copied = _copy_from_teacher(student, teacher.state_dict(), teacher_layers)
        del teacher
    return student, copied


def _copy_from_teacher(student, teacher_state: dict, teacher_layers: list[int]) -> list[str]:
    copied = []
    with torch.no_grad():
        for name, tensor in student.state_dict().items():
            source = name
            if ".layers." in name:
                head, rest = name.split(".layers.", 1)
                index, tail = rest.split(".", 1)
                source = f"{head}.layers.{teacher_layers[int(index)]}.{tail}"
            if source in teacher_state and teacher_state[source].shape == tensor.shape:
                tensor.copy_(teacher_state[source])
                copied.append(name)
    return copied


def losses(student_logits: torch.Tensor, batch: dict, alpha: float) -> tuple[torch.Tensor, dict]:
    """student_logits [N, V] at the answer positions -> (alpha * KD + (1 - alpha) * CE, the parts as floats)."""
    logq = torch.log_softmax(student_logits.float(), dim=-1)                  # [N, V]
    target = torch.softmax(batch["topk_logprobs"], dim=-1)                     # [N, k], renormalised over top-k
    kd = -(target * logq.gather(1, batch["topk_ids"])).sum(-1).mean()
    ce = F.nll_loss(logq, batch["labels"][batch["mask"]])
    loss = alpha * kd + (1 - alpha) * ce
    return loss, {"loss": loss.item(), "kd": kd.item(), "ce": ce.item()}


@torch.no_grad()
def evaluate(student, teacher_model, examples: list[Example], batch_size: int, device) -> dict:
    """Mean full-vocabulary KL(teacher || student) per answer token, and the top-1 agreement rate."""
    student.eval()
    kl_sum, agree, count = 0.0, 0, 0
    for chunk in batches(examples, batch_size):
        data = collate(chunk, device)
        with _autocast(device):
            logp = torch.log_softmax(answer_logits(teacher_model, data).float(), dim=-1)  # [N, V]
            logq = torch.log_softmax(answer_logits(student, data).float(), dim=-1)        # [N, V]
        kl_sum += (logp.exp() * (logp - logq)).sum().item()
        agree += (logp.argmax(-1) == logq.argmax(-1)).sum().item()
        count += logp.shape[0]
    student.train()
    return {"kl": kl_sum / max(count, 1), "agreement": agree / max(count, 1), "tokens": count}


def _autocast(device):
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def train(student, train_set: list[Example], *, steps: int, batch_size: int, lr: float, alpha: float, device,
          max_seconds: float | None = None, seed: int = 0, log_every: int = 10) -> list[dict]:
    """AdamW, linear warm-up over the first 5% then cosine decay to 0 over the run's progress: the larger of
    step / steps and elapsed / max_seconds, so a run cut by time still anneals. Returns the loss curve."""
    from tqdm import tqdm
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    curve, start, order, progress = [], time.monotonic(), [], 0.0
    student.train()
    for step in tqdm(range(steps), desc="distill", unit="step", dynamic_ncols=True):
        if not order:
            order = list(range(len(train_set)))
            rng.shuffle(order)
        picked, order = order[:batch_size], order[batch_size:]
        data = collate([train_set[i] for i in picked], device)
        rate = lr * min(1.0, (progress + 1 / steps) / 0.05, 0.5 * (1 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = rate
        with _autocast(device):
            logits = student(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).logits
        loss, parts = losses(logits[data["mask"]], data, alpha)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        elapsed = time.monotonic() - start
        progress = max((step + 1) / steps, elapsed / max_seconds if max_seconds else 0.0)
        if step % log_every == 0 or step == steps - 1 or progress >= 1:
            curve.append({"step": step, **{k: round(v, 4) for k, v in parts.items()}, "lr": rate,
                          "seconds": round(elapsed, 1)})
        if progress >= 1:
            break
    return curve


def load_examples(data: str | Path | list[dict], tokenizer, max_prompt_tokens: int) -> list[Example]:
    """Examples from a data path (distill_data.read_rows) or from rows already in memory."""
    rows = read_rows(data) if isinstance(data, (str, Path)) else data
    if not rows:
        raise ValueError("data: no rows")
    return [row_to_example(r, tokenizer, max_prompt_tokens) for r in rows]


def distill(teacher: str, data, student_config: dict, out: str | Path, *, steps: int = 1000, batch_size: int = 32,
            lr: float = 5e-4, alpha: float = 0.8, top_k: int = 32, max_prompt_tokens: int = 256,
            max_new_tokens: int = 192, held_out: float = 0.05, device: str = "auto",
            max_seconds: float | None = None, engine_options: dict | None = None, seed: int = 0) -> dict:
    """Generate, train, evaluate and save (module docstring). Returns the training record (also out/distill.json)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    _check(steps=steps, batch_size=batch_size, top_k=top_k, max_new_tokens=max_new_tokens)
    if not 0.0 <= alpha <= 1.0 or not 0.0 < held_out < 1.0:
        raise ValueError(f"alpha must be in [0, 1] and held_out in (0, 1); got {alpha}, {held_out}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    examples = load_examples(data, tokenizer, max_prompt_tokens)
    generated = generate_answers(examples, teacher, max_new_tokens, device=device, **(engine_options or {}))
    examples = [e for e in examples if e.answer_ids]
    random.Random(seed).shuffle(examples)
    n_held = max(1, round(len(examples) * held_out))
    held, train_set = examples[:n_held], examples[n_held:]
    if not train_set:
        raise ValueError("data: too few rows with answers to hold some out and train on the rest")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    teacher_model = AutoModelForCausalLM.from_pretrained(teacher, dtype=dtype).to(device).eval()
    add_teacher_topk(train_set, teacher_model, top_k, batch_size, device)
    student, copied = build_student(teacher, student_config, student_config.get("init", "teacher"), seed)
    student.to(device)
    before = evaluate(student, teacher_model, held, batch_size, device)
    train_started = time.monotonic()
    curve = train(student, train_set, steps=steps, batch_size=batch_size, lr=lr, alpha=alpha, device=device,
                  max_seconds=max_seconds, seed=seed)
    train_seconds = time.monotonic() - train_started
    after = evaluate(student, teacher_model, held, batch_size, device)
    save_student(student, tokenizer, out)
    record = _record(teacher, student_config, device, student, copied, examples, generated, train_set, held,
                     dict(steps=steps, batch_size=batch_size, lr=lr, alpha=alpha, top_k=top_k,
                          max_prompt_tokens=max_prompt_tokens, max_new_tokens=max_new_tokens),
                     curve, train_seconds, time.monotonic() - started, before, after)
    Path(out, "distill.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def _record(teacher, student_config, device, student, copied, examples, generated, train_set, held, hyper,
            curve, train_seconds, wall_seconds, before, after) -> dict:
    steps_done = curve[-1]["step"] + 1
    return {
        "teacher": str(teacher), "student_config": student_config, "device": device,
        "student_parameters": sum(p.numel() for p in student.parameters()),
        "initialised_from_teacher": len(copied), "examples": len(examples), "teacher_generated": generated,
        "train_examples": len(train_set), "held_out_examples": len(held),
        "answer_tokens": sum(len(e.answer_ids) for e in train_set), "hyperparameters": hyper,
        "steps_done": steps_done, "epochs": round(steps_done * hyper["batch_size"] / len(train_set), 2),
        "train_seconds": round(train_seconds, 1), "wall_seconds": round(wall_seconds, 1),
        "held_out": {"before": before, "after": after}, "curve": curve,
    }


def save_student(student, tokenizer, out: str | Path) -> None:
    """A normal Hugging Face folder: bf16 safetensors, config, tokenizer."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    student.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _check(**positive) -> None:
    for name, value in positive.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: must be a positive integer, got {value!r}")
