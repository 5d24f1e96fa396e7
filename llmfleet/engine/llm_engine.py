"""LLMEngine: the engine core and the output processor in one process, for the offline `LLM` and tools.

`step()` runs one core step and turns its token deltas into RequestOutputs (text, stop strings, n samples). The API
server runs the same two halves in two processes instead (engine/core_proc.py, engine/core_client.py).
"""
from __future__ import annotations

import time

from llmfleet.engine.core import EngineCore
from llmfleet.engine.output_processor import OutputProcessor, tokenize_prompt
from llmfleet.engine.request import Status
from llmfleet.protocol.config import EngineConfig
from llmfleet.protocol.lora import check_lora_request
from llmfleet.protocol.outputs import PoolingRequestOutput, RequestOutput
from llmfleet.protocol.pooling_params import PoolingParams
from llmfleet.protocol.sampling_params import SamplingParams


class LLMEngine:
    def __init__(self, config: EngineConfig):
        self.config = config
        self.core = EngineCore(config)
        self.tokenizer = self.core.tokenizer
        self.model_name = self.core.model_name
        self.max_model_len = self.core.max_model_len
        self.vocab_size = self.core.vocab_size
        self.processor = OutputProcessor(self.tokenizer, config.enable_prefix_caching)

    @property
    def runner(self):
        return self.core.runner

    @property
    def scheduler(self):
        return self.core.scheduler

    @property
    def kv(self):
        return self.core.kv

    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams,
                    priority: int = 0, arrival_time: float | None = None, lora_request=None) -> None:
        """Queues a request (with `lora_request`, a LoRARequest, under that adapter); raises ValueError naming the
        field for bad input (nothing is queued then)."""
        if not isinstance(params, SamplingParams):
            raise ValueError("sampling_params: must be a SamplingParams")
        lora = check_lora_request(lora_request, self.config)
        text, ids = tokenize_prompt(prompt, self.tokenizer)
        self.core.limits.check_token_ids(ids)
        self.core.limits.max_total_tokens(len(ids), params)
        arrival = time.monotonic() if arrival_time is None else arrival_time
        for request in self.processor.add(request_id, text, ids, params, arrival, priority, lora):
            self.core.add_request(request)

    def add_pooling_request(self, request_id: str, prompt: str | list[int], params: PoolingParams | None = None,
                            priority: int = 0) -> None:
        """Queues a pooling (embedding) request; ValueError naming the field for bad input."""
        params = params or PoolingParams()
        if not isinstance(params, PoolingParams):
            raise ValueError("pooling_params: must be a PoolingParams")
        text, ids = tokenize_prompt(prompt, self.tokenizer)
        self.core.limits.check_token_ids(ids)
        self.core.limits.check_pooling_prompt(len(ids), self.config.max_num_batched_tokens)
        self.core.add_request(self.processor.add_pooling(request_id, ids, params, time.monotonic(), priority))

    def abort_request(self, request_ids: str | list[str]) -> None:
        for request_id in [request_ids] if isinstance(request_ids, str) else request_ids:
            self.core.abort_requests(self.processor.abort(request_id))

    def has_unfinished_requests(self) -> bool:
        return len(self.processor) > 0

    def step(self) -> list[RequestOutput | PoolingRequestOutput]:
        """One core step; the outputs of the requests whose tokens arrived (see EngineCore.step)."""
        outputs, stopped = self.processor.process(self.core.step(), time.monotonic())
        if stopped:
            self.core.abort_requests(stopped, Status.FINISHED_STOPPED)
        return outputs

    def stats(self):
        return self.core.stats()
