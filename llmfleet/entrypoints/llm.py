"""The offline API, shaped like vLLM's: `LLM(model, ...).generate(prompts, sampling_params)`.

`embed(texts)` returns one pooled vector per text (an embedding model, or a decoder with `pooling=`).
`generate` shows a progress bar over the prompts by default (`use_tqdm=False` turns it off). With
`skip_tokenizer_init=True` no tokenizer is loaded: prompts must be token ids, and outputs carry token ids and empty
text.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

from llmfleet.protocol.config import EngineConfig
from llmfleet.engine.llm_engine import LLMEngine
from llmfleet.protocol.lora import LoRARequest
from llmfleet.protocol.outputs import PoolingRequestOutput, RequestOutput
from llmfleet.protocol.pooling_params import PoolingParams
from llmfleet.protocol.sampling_params import SamplingParams

PromptType = str | list[int]


class LLM:
    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", block_size: int = 16,
                 num_kv_blocks: int | None = None, max_num_seqs: int = 256, max_num_batched_tokens: int = 8192,
                 enable_prefix_caching: bool = True, max_model_len: int | None = None,
                 skip_tokenizer_init: bool = False, **engine_options):
        config = EngineConfig(
            model=model, device=device, dtype=dtype, block_size=block_size, num_kv_blocks=num_kv_blocks,
            max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
            enable_prefix_caching=enable_prefix_caching, max_model_len=max_model_len,
            skip_tokenizer_init=skip_tokenizer_init, **engine_options)
        self.engine = LLMEngine(config)
        self._ids = itertools.count()

    def get_tokenizer(self):
        return self.engine.tokenizer

    def generate(self, prompts: PromptType | Sequence[PromptType],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 priority: Sequence[int] | None = None, use_tqdm: bool = True,
                 lora_request: LoRARequest | Sequence[LoRARequest | None] | None = None) -> list[RequestOutput]:
        """Runs every prompt to completion, with a progress bar unless `use_tqdm=False`; returns one RequestOutput
        per prompt, in order. `lora_request`: one adapter for every prompt, or one (or None: the base model) per
        prompt (the engine needs enable_lora=True).

        A bad prompt or parameter raises ValueError before anything runs; the engine stays usable.
        """
        prompts = _as_prompt_list(prompts)
        params = [dataclasses.replace(p, output_kind="final_only")
                  for p in _as_params_list(sampling_params, len(prompts))]
        priorities = list(priority) if priority is not None else [0] * len(prompts)
        if len(priorities) != len(prompts):
            raise ValueError(f"priority: has {len(priorities)} entries for {len(prompts)} prompts")
        loras = _as_lora_list(lora_request, len(prompts))
        ids = [f"offline-{next(self._ids)}" for _ in prompts]
        try:
            for request_id, prompt, p, prio, lora in zip(ids, prompts, params, priorities, loras):
                self.engine.add_request(request_id, prompt, p, prio, lora_request=lora)
        except ValueError:
            self.engine.abort_request(ids)
            raise
        return self._run(ids, use_tqdm)

    def embed(self, prompts: PromptType | Sequence[PromptType], pooling_params: PoolingParams | None = None,
              use_tqdm: bool = False) -> list[PoolingRequestOutput]:
        """One pooled vector per prompt, in order (`outputs.data`); ValueError before anything runs for bad input."""
        prompts = _as_prompt_list(prompts)
        ids = [f"offline-embed-{next(self._ids)}" for _ in prompts]
        try:
            for request_id, prompt in zip(ids, prompts):
                self.engine.add_pooling_request(request_id, prompt, pooling_params)
        except ValueError:
            self.engine.abort_request(ids)
            raise
        return self._run(ids, use_tqdm)

    def _run(self, ids: list[str], use_tqdm: bool) -> list:
        finished: dict[str, RequestOutput] = {}
        progress = None
        if use_tqdm:
            from tqdm import tqdm
            progress = tqdm(total=len(ids), desc="prompts", unit="prompt", dynamic_ncols=True)
        try:
            while len(finished) < len(ids):
                for output in self.engine.step():
                    if output.finished:
                        finished[output.request_id] = output
                        if progress is not None:
                            progress.update(1)
        except BaseException:
            self.engine.abort_request([i for i in ids if i not in finished])
            raise
        finally:
            if progress is not None:
                progress.close()
        return [finished[i] for i in ids]

    def chat(self, messages: list[dict], sampling_params: SamplingParams | None = None) -> RequestOutput:
        """One conversation through the tokenizer's chat template."""
        tokenizer = self.engine.tokenizer
        if tokenizer is None:
            raise ValueError("messages: chat needs a tokenizer (this LLM has skip_tokenizer_init=True)")
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer.encode(text, add_special_tokens=False)
        return self.generate([ids], sampling_params)[0]


def _as_prompt_list(prompts) -> list[PromptType]:
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, Sequence) and prompts and all(isinstance(t, int) for t in prompts):
        return [list(prompts)]
    if not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts: must be a string, a list of token ids, or a non-empty list of those")
    return list(prompts)


def _as_params_list(params, count: int) -> list[SamplingParams]:
    if params is None:
        return [SamplingParams()] * count
    if isinstance(params, SamplingParams):
        return [params] * count
    params = list(params)
    if len(params) != count:
        raise ValueError(f"sampling_params: has {len(params)} entries for {count} prompts")
    return params


def _as_lora_list(loras, count: int) -> list[LoRARequest | None]:
    if loras is None or isinstance(loras, LoRARequest):
        return [loras] * count
    if not isinstance(loras, Sequence) or isinstance(loras, str):
        raise ValueError(f"lora_request: must be a LoRARequest or a list of them, got {type(loras).__name__}")
    loras = list(loras)
    if len(loras) != count:
        raise ValueError(f"lora_request: has {len(loras)} entries for {count} prompts")
    return loras
