"""Greedy decoding of an exported model in onnxruntime (CPU), with the KV cache fed back step by step."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmfleet.export.onnx_export import META_FILE, MODEL_FILE


@dataclass
class GreedyResult:
    """Generated ids and their timings: first_token_ms covers the prefill, per_token_ms each later step."""
    tokens: list[int]
    first_token_ms: float
    per_token_ms: list[float] = field(default_factory=list)


class OnnxDecoderSession:
    """One onnxruntime session over `export_dir`/`file` (model.onnx or model.int8.onnx)."""

    def __init__(self, export_dir: str | Path, file: str = MODEL_FILE, threads: int | None = None):
        import onnxruntime as ort

        folder = Path(export_dir)
        self.meta = json.loads((folder / META_FILE).read_text())
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(folder / file), options, providers=["CPUExecutionProvider"])

    def empty_past(self, batch: int = 1) -> list[np.ndarray]:
        shape = (batch, self.meta["num_kv_heads"], 0, self.meta["head_dim"])
        return [np.zeros(shape, np.float32) for _ in range(2 * self.meta["num_layers"])]

    def step(self, ids: np.ndarray, past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """ids [B, S] after past [B, Hkv, P, D] each -> (logits [B, S, V], present [B, Hkv, P+S, D] each)."""
        batch, seq = ids.shape
        cached = past[0].shape[2]
        feed = {"input_ids": ids.astype(np.int64),
                "attention_mask": np.ones((batch, cached + seq), np.int64),
                "position_ids": np.broadcast_to(np.arange(cached, cached + seq, dtype=np.int64), (batch, seq)).copy()}
        feed.update(zip(self.meta["inputs"][3:], past))
        logits, *present = self.session.run(self.meta["outputs"], feed)
        return logits, present

    def greedy(self, prompt: list[int], max_tokens: int, stop_at_eos: bool = False) -> GreedyResult:
        """Greedy continuation of one prompt through the KV cache."""
        if not prompt or max_tokens < 1:
            raise ValueError("prompt: needs at least one token, and max_tokens at least 1")
        eos = set(self.meta["eos_token_ids"]) if stop_at_eos else set()
        start = time.perf_counter()
        logits, past = self.step(np.array([prompt]), self.empty_past())
        result = GreedyResult([int(logits[0, -1].argmax())], (time.perf_counter() - start) * 1e3)
        while len(result.tokens) < max_tokens and result.tokens[-1] not in eos:
            start = time.perf_counter()
            logits, past = self.step(np.array([[result.tokens[-1]]]), past)
            result.tokens.append(int(logits[0, -1].argmax()))
            result.per_token_ms.append((time.perf_counter() - start) * 1e3)
        return result

    def greedy_no_cache(self, prompt: list[int], max_tokens: int) -> list[int]:
        """The same continuation recomputing the whole sequence every step (the check on the cache path)."""
        tokens = list(prompt)
        for _ in range(max_tokens):
            logits, _ = self.step(np.array([tokens]), self.empty_past())
            tokens.append(int(logits[0, -1].argmax()))
        return tokens[len(prompt):]
