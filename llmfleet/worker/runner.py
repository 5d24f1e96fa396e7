"""The model runner owns everything on the device: weights, the KV cache, input buffers and sampling.

`launch(scheduler_output)` applies the step's contract to the worker's own sequence states (seq_state.py), queues
the step on the device without waiting and returns; `collect(launched)` then returns, by seq id, the token each
sampling sequence drew (a prefill chunk that has not reached its sequence's end draws none) and its logprobs when
asked, the prompt logprobs of the prefill chunks that computed them (prompt_logprobs.py), and each pooling request's
vector (pooling.py). An encoder (BERT) has no KV cache: its blocks are scheduler bookkeeping, for pooling only.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from llmfleet.protocol.config import EngineConfig
from llmfleet.protocol.scheduler_output import SchedulerOutput
from llmfleet.worker.cuda_graphs import DecodeGraphs
from llmfleet.worker.inputs import StepInputs, prepare_inputs
from llmfleet.worker.memory import outside_torch_memory
from llmfleet.worker.pooling import pool_step
from llmfleet.worker.piecewise_graphs import PiecewiseGraphs
from llmfleet.worker.prompt_logprobs import compute_prompt_logprobs, plan_prompt_logprobs
from llmfleet.worker.seq_state import SeqState, SeqStates
from llmfleet.worker.spec_decode.rejection import Verified
from llmfleet.worker.spec_decode.verify_rows import (as_decode_rows, fits_decode_rows, hidden_rows,
                                                     max_decode_rows)
from llmfleet.worker.spec_decode.verify_step import collect_verified, expand_rows, launch_verify
from llmfleet.worker.transfer import HostCopy, to_device
from llmfleet.worker.warmup import warm_up
from llmfleet.model.layers.attention import AttentionMetadata, get_attention_backend
from llmfleet.model.layers.pooler import pooler_config
from llmfleet.model.layers.logits_adjust import LogitAdjustments
from llmfleet.model.layers.sampler import SamplerOutput, SamplingBatch, sample
from llmfleet.model.loader import load_model

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class LaunchedStep:
    """A step queued on the device; `collect` turns it into a StepResult."""
    step_id: int                             # increasing per runner: the sequences' pending tokens name it
    seqs: list[SeqState]                     # the sequences that sample, in batch order
    result: SamplerOutput | None = None      # device tensors, row i for seqs[i]
    tokens: HostCopy | None = None           # the sampled ids on their way to the host
    prompt_logprobs: dict | None = None      # seq id -> its prompt logprobs from this step (already on the host)
    pooled_seqs: list[SeqState] | None = None  # the pooling sequences, in batch order
    pooled: HostCopy | None = None           # their vectors [P, H] on their way to the host
    verified: Verified | None = None         # a verify step (drafts in it): the emitted tokens per sequence
    proposals: dict[int, int] | None = None  # seq id -> drafts to propose once its tokens are read back
    hidden: torch.Tensor | None = None       # an EAGLE head's input: final hidden states [T, H] of the step
    hidden_at: dict[int, tuple[int, int]] | None = None  # seq id -> (its first row in `hidden`, its position)
    _rows: dict[int, int] | None = None

    def row_of(self, seq_id: int) -> int:
        """Row of sequence `seq_id` among this step's sampled tokens."""
        if self._rows is None:
            self._rows = {s.seq_id: i for i, s in enumerate(self.seqs)}
        return self._rows[seq_id]


@dataclass(slots=True)
class StepResult:
    sampled: dict[int, int]                     # seq id -> token it sampled, in batch order (sampling rows only)
    logprobs: dict[int, tuple[list[int], list[float], int]]  # seq id -> (token ids, logprobs, sampled rank),
    #                                                          for the sampling sequences that asked
    prompt_logprobs: dict[int, tuple[int, list]] = field(default_factory=dict)  # seq id -> (first prompt
    #                                                          position, entries shaped like `logprobs`' values)
    pooled: dict[int, list[float]] | None = None  # seq id -> pooled vector, for the pooling sequences
    # Speculative decoding: seq id -> the tokens its verify step gave after `sampled`'s (accepted drafts, then the
    # target's own), only where there are some; their logprobs when asked; drafts a worker-side proposer made
    verified: dict[int, list[int]] = field(default_factory=dict)
    verified_logprobs: dict[int, list[tuple[list[int], list[float], int]]] = field(default_factory=dict)
    draft_token_ids: dict[int, list[int]] = field(default_factory=dict)


class ModelRunner:
    last_hidden: torch.Tensor | None = None   # final hidden states [T, H] of the last forward's tokens

    def __init__(self, config: EngineConfig, device: str, dtype: torch.dtype, model_path: str, hf_config=None):
        self.config, self.device, self.dtype = config, device, dtype
        self.step_timings: list | None = None
        self.block_size = config.block_size
        # fp8: e4m3 with per-layer scales (1 byte an element, so twice the blocks of a 16-bit cache)
        self.kv_dtype = torch.float8_e4m3fn if config.kv_cache_dtype == "fp8" else dtype
        self.seqs = SeqStates()
        self.eos_token_ids: frozenset[int] = frozenset()  # set by the engine core: what min_tokens holds back
        self._num_launched = 0
        self.graphs: DecodeGraphs | None = None
        self.piecewise: PiecewiseGraphs | None = None
        self.drafter = None   # a DraftModelProposer or EagleProposer with speculation by a model
        began = time.perf_counter()
        cuda = device.startswith("cuda")
        self.memory_before_load = torch.cuda.memory_allocated() if cuda else 0  # other engines in this process
        self.outside_torch_before_load = outside_torch_memory() if cuda else 0   # other processes, CUDA context
        self.model, self.hf_config, self.info = load_model(
            model_path, dtype, device, load_format=config.load_format, hf_config=hf_config,
            quantization=config.quantization)
        self.weight_bytes = torch.cuda.memory_allocated() - self.memory_before_load if cuda else 0
        self.lora = self._attach_lora(cuda)
        self.is_encoder = bool(getattr(self.model, "is_encoder", False))
        self.pooler = pooler_config(model_path, self.is_encoder, config.pooling)
        logger.info("model loaded in %.1f s", time.perf_counter() - began)
        self.backend = get_attention_backend(config.attention_backend, device)
        self.layers = self.model.attention_layers()
        for layer in self.layers:
            layer.backend = self.backend
        limit = self.info.max_position_embeddings
        if self.is_encoder and self.pooler.max_seq_length:  # sentence-transformers' input limit
            limit = min(limit, self.pooler.max_seq_length)
        self.max_model_len = min(config.max_model_len or limit, limit)
        self._load_drafter(cuda)
        began = time.perf_counter()
        self.num_blocks = config.num_kv_blocks or self._blocks_from_memory()
        self._allocate_caches()
        logger.info("KV cache: %d blocks of %d tokens (%d tokens, %.2f GiB), sized in %.1f s", self.num_blocks,
                    self.block_size, self.num_blocks * self.block_size,
                    self.num_blocks * self.bytes_per_block / 2**30, time.perf_counter() - began)
        self.graphs = self._capture_graphs()
        self.piecewise = self._capture_piecewise()
        if not self.is_encoder:
            warm_up(self)  # compiles every eager kernel variant now, so no request pays for it

    @property
    def kv_heads(self) -> int:
        """KV heads held by this rank (under tensor parallelism, its shard)."""
        return self.layers[0].num_kv_heads if self.layers else 0

    @property
    def bytes_per_block(self) -> int:
        """Bytes of one KV block: the target's, plus the draft model's where there is one (same block ids)."""
        target = 2 * len(self.layers) * self.block_size * self.kv_heads * self.info.head_dim * self.kv_dtype.itemsize
        return target + (self.drafter.bytes_per_block if self.drafter is not None else 0)

    def _load_drafter(self, cuda: bool) -> None:
        spec = self.config.speculative_config
        if spec is None or not spec.uses_draft_model:
            return
        from llmfleet.worker.spec_decode.draft_model import DraftModelProposer
        from llmfleet.worker.spec_decode.eagle import EagleProposer
        before = torch.cuda.memory_allocated() if cuda else 0
        self.drafter = (EagleProposer if spec.uses_eagle else DraftModelProposer)(self, spec)
        self.weight_bytes += torch.cuda.memory_allocated() - before if cuda else 0

    def _attach_lora(self, cuda: bool):
        """The adapter slot pool (None without enable_lora); its stacks count as weights in memory sizing."""
        cfg = self.config
        if not cfg.enable_lora:
            return None
        from llmfleet.worker.lora_slots import LoRASlots
        max_tokens = max(cfg.max_num_batched_tokens, cfg.max_num_seqs, cfg.cuda_graph_max_batch)
        slots = LoRASlots(self.model, cfg.max_loras, cfg.max_lora_rank, max_tokens, cfg.max_cpu_loras,
                          self.dtype, self.device)
        self.weight_bytes += slots.device_bytes if cuda else 0
        return slots

    def _allocate_caches(self) -> None:
        """The KV cache of every layer (and of the draft model's, same block ids), bound to its layer."""
        self.kv_caches = [self._new_cache(self.num_blocks) for _ in self.layers]
        self._bind(self.kv_caches)
        if self.drafter is not None:
            self.drafter.allocate_cache(self.num_blocks)

    def _new_cache(self, num_blocks: int) -> torch.Tensor:
        shape = (2, num_blocks, self.block_size, self.kv_heads, self.info.head_dim)
        return torch.zeros(shape, dtype=self.kv_dtype, device=self.device)

    def _bind(self, caches: list[torch.Tensor]) -> None:
        for layer, cache in zip(self.layers, caches):
            layer.kv_cache = cache

    def _capture_graphs(self) -> DecodeGraphs | None:
        if self.config.enforce_eager or not self.device.startswith("cuda") or self.is_encoder:
            return None
        max_batch = max_decode_rows(self.config)   # verify steps replay them too, as 1 + k rows a sequence
        graphs = DecodeGraphs(self.model, self.device, max_batch, -(-self.max_model_len // self.block_size),
                              self.max_model_len)
        graphs.capture()
        return graphs

    def _capture_piecewise(self) -> PiecewiseGraphs | None:
        max_tokens = min(self.config.cuda_graph_max_tokens, self.config.max_num_batched_tokens)
        if self.config.enforce_eager or not self.device.startswith("cuda") or max_tokens == 0 or self.is_encoder:
            return None
        graphs = PiecewiseGraphs(self.model, self.layers, self.backend, self.device, self.dtype, max_tokens)
        graphs.capture()
        return graphs

    def _blocks_from_memory(self) -> int:
        seqs_worth = self.config.max_num_seqs * -(-self.max_model_len // self.block_size)
        if not self.layers:   # an encoder: blocks cost nothing, enough for every sequence at full length
            return seqs_worth
        if not self.device.startswith("cuda"):
            return max(1, min(self.config.cpu_kv_cache_bytes // self.bytes_per_block, seqs_worth))
        from llmfleet.worker.memory import profile_kv_blocks
        return profile_kv_blocks(self)

    # ---- one step -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def launch(self, out: SchedulerOutput, prev: LaunchedStep | None = None) -> LaunchedStep:
        """Queues one step on the device and returns without waiting for it. Placeholder tokens (sampled by
        `prev`, not read back) are taken from `prev`'s device tensor."""
        began = time.perf_counter()
        seqs = self.seqs.apply(out)
        num_scheduled = list(out.num_scheduled_tokens.values())
        inputs = prepare_inputs(seqs, num_scheduled, self.block_size, out.scheduled_spec_decode_tokens)
        fix = self._placeholder_fix(seqs, out, inputs, prev)
        if self.lora is not None:
            self.lora.prepare([seq.lora for seq in seqs], num_scheduled)
        events = self._events_begin(time.perf_counter() - began)
        self._num_launched += 1
        step = LaunchedStep(self._num_launched, [seqs[i] for i in inputs.sample_rows])
        plan = plan_prompt_logprobs(seqs, inputs.query_start_loc, num_scheduled)
        if plan is None and not inputs.pool_rows:
            logits = self._logits(inputs, fix)
        else:  # the prompt rows' or the pooled rows' hidden states are needed too: the eager path
            hidden = self._forward(inputs, fix)
            if plan is not None:
                step.prompt_logprobs = compute_prompt_logprobs(self.model, hidden, plan)
            if inputs.pool_rows:
                step.pooled_seqs = [seqs[i] for i in inputs.pool_rows]
                step.pooled = HostCopy(pool_step(hidden, inputs, seqs, self.pooler, self.device))
            logits = self._sampled_logits(inputs, hidden)
        if logits is not None and inputs.spec_counts is not None:
            launch_verify(self, step, out, logits, inputs.spec_counts)
        elif logits is not None:
            step.result = sample(logits, self._sampling_batch(step, out))
            step.tokens = HostCopy(step.result.token_ids)
        if logits is not None:
            self.seqs.sampled(step.step_id, step.seqs)
        step.proposals = out.spec_num_proposals or None
        if step.proposals and getattr(self.drafter, "needs_hidden", False):
            step.hidden, step.hidden_at = self.last_hidden, hidden_rows(inputs, seqs)
        self._events_end(events)
        return step

    def collect(self, step: LaunchedStep) -> StepResult:
        """Waits for a launched step's tokens (and only for them); the worker's states take them in."""
        pooled = None
        if step.pooled is not None:
            pooled = {seq.seq_id: row for seq, row in zip(step.pooled_seqs, step.pooled.wait().tolist())}
        if step.tokens is None:
            return StepResult({}, {}, step.prompt_logprobs or {}, pooled)
        if step.verified is not None:
            sampled, logprobs, verified, verified_logprobs = collect_verified(self, step)
            result = StepResult(sampled, logprobs, step.prompt_logprobs or {}, pooled, verified, verified_logprobs)
        else:
            result = self._collect_sampled(step, pooled)
        if step.proposals and self.drafter is not None:
            result.draft_token_ids = self.drafter.propose(
                [s for s in (self.seqs.get(i) for i in step.proposals) if s is not None], step.proposals, step)
        return result

    def _collect_sampled(self, step: LaunchedStep, pooled) -> StepResult:
        tokens = step.tokens.wait().tolist()
        self.seqs.received(step.step_id, step.seqs, tokens)
        sampled = {seq.seq_id: token for seq, token in zip(step.seqs, tokens)}
        logprobs = self._collect_logprobs(step.result, step.seqs) if step.result.logprobs is not None else {}
        return StepResult(sampled, logprobs, step.prompt_logprobs or {}, pooled)

    def _placeholder_fix(self, seqs: list[SeqState], out: SchedulerOutput, inputs: StepInputs,
                         prev: LaunchedStep | None):
        """(positions in this step's flat batch, token ids on the device) for the placeholder input tokens."""
        dst, src = [], []
        for i, seq in enumerate(seqs):
            count = out.num_placeholder_tokens.get(seq.seq_id, 0)
            if count == 0:
                continue
            # One placeholder, the last token of the query, sampled by `prev` as the worker's own record says.
            if count != 1 or prev is None or seq.pending_steps != [prev.step_id]:
                raise RuntimeError(f"num_placeholder_tokens: sequence {seq.seq_id} has {count}, but its pending "
                                   f"tokens come from steps {seq.pending_steps}")
            dst.append(int(inputs.query_start_loc[i + 1]) - 1)
            src.append(prev.row_of(seq.seq_id))
        if not dst:
            return None
        values = prev.result.token_ids.index_select(0, to_device(src, self.device, torch.int64))
        return to_device(dst, self.device, torch.int64), values

    def _events_begin(self, prepare_s: float):
        """With `step_timings` set to a list, records (input preparation seconds, device start/end events)."""
        if self.step_timings is None or not self.device.startswith("cuda"):
            return None
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        self.step_timings.append((prepare_s, start, end))
        return end

    @staticmethod
    def _events_end(end) -> None:
        if end is not None:
            end.record()

    def _logits(self, inputs: StepInputs, fix=None) -> torch.Tensor | None:
        """Logits [S, V] of the sequences that sample this step (None when none does)."""
        if fits_decode_rows(inputs):   # a verify step: one decode row per token (spec_decode/verify_rows.py)
            inputs = as_decode_rows(inputs)
        if self.graphs is not None and self.graphs.can_run(inputs):
            logits = self.graphs.run(inputs, fix)
            self.last_hidden = self.graphs.last_hidden
            if len(inputs.sample_rows) == len(inputs.seq_lens):
                return logits
            return logits[to_device(inputs.sample_rows, self.device, torch.int64)] if inputs.sample_rows else None
        return self._sampled_logits(inputs, self._forward(inputs, fix))

    def _sampled_logits(self, inputs: StepInputs, hidden: torch.Tensor) -> torch.Tensor | None:
        if not inputs.sample_rows:
            return None
        return self.model.compute_logits(hidden[to_device(inputs.logits_indices, self.device)])

    def _forward(self, inputs: StepInputs, fix=None) -> torch.Tensor:
        self.last_hidden = self._model_forward(inputs, fix)
        return self.last_hidden

    def _model_forward(self, inputs: StepInputs, fix=None) -> torch.Tensor:
        meta = self._metadata(inputs)
        if self.piecewise is not None and self.piecewise.can_run(inputs):
            return self.piecewise.run(inputs, meta, fix)
        ids = to_device(inputs.input_ids, self.device)
        if fix is not None:
            ids.index_copy_(0, *fix)
        return self.model.forward(ids, to_device(inputs.positions, self.device), meta)

    def _metadata(self, inputs: StepInputs) -> AttentionMetadata:
        on_cpu = not self.device.startswith("cuda")
        dev = self.device
        return AttentionMetadata(
            num_seqs=len(inputs.seq_lens), num_decodes=inputs.num_decodes, max_query_len=inputs.max_query_len,
            max_seq_len=inputs.max_seq_len, query_start_loc=to_device(inputs.query_start_loc, dev),
            seq_lens=to_device(inputs.seq_lens, dev), block_tables=to_device(inputs.block_tables, dev),
            slot_mapping=to_device(inputs.slot_mapping, dev),
            query_start_loc_cpu=inputs.query_start_loc.tolist() if on_cpu else None,
            seq_lens_cpu=inputs.seq_lens.tolist() if on_cpu else None)

    def _sampling_batch(self, step: LaunchedStep, out: SchedulerOutput,
                        spec_counts: list[int] | None = None) -> SamplingBatch:
        """One entry per logits row: per sequence, or with drafts (spec_counts) 1 + k rows per sequence."""
        seqs = step.seqs
        reps = [1 + k for k in spec_counts] if spec_counts is not None else None
        rows = expand_rows(seqs, reps)
        params = [s.params for s in rows]
        batch = SamplingBatch(params=params, generators=[s.generator for s in rows])
        if any(p.logit_bias or p.min_tokens for p in params):
            # Counts known at launch (pending tokens included): the asynchronous path needs no read-back for them.
            counts = [s.num_tokens - len(s.prompt_token_ids) for s in seqs]
            batch.adjustments = LogitAdjustments.build(params, expand_rows(counts, reps, step=1), self.eos_token_ids)
        if any(p.has_penalties for p in params):
            batch.output_token_ids = [s.output_token_ids for s in rows]
            batch.prompt_token_ids = [s.prompt_token_ids for s in rows]
        if out.grammar_seq_ids:
            first = np.cumsum([0] + reps[:-1]).tolist() if reps is not None else None
            at = [step.row_of(i) for i in out.grammar_seq_ids]
            batch.token_bitmask = to_device(out.grammar_bitmask, self.device)
            batch.bitmask_rows = to_device([first[r] for r in at] if first else at, self.device, torch.int64)
        return batch

    @staticmethod
    def _collect_logprobs(result: SamplerOutput, seqs: list[SeqState], keyed: bool = True):
        """seq id -> (ids, logprobs, rank) for the rows whose sequence asked; with keyed=False, a list over every
        row instead (None where it did not ask)."""
        values = result.logprobs.tolist()
        ids = result.logprob_token_ids.tolist()
        ranks = result.ranks.tolist()
        rows = []
        for j, seq in enumerate(seqs):
            n = 1 + seq.params.logprobs if seq.params.logprobs is not None else 0
            rows.append((ids[j][:n], values[j][:n], ranks[j]) if n else None)
        if not keyed:
            return rows
        return {seq.seq_id: row for seq, row in zip(seqs, rows) if row is not None}

    # ---- profiling support ------------------------------------------------------------------------------------
    def dummy_inputs(self, num_tokens: int, num_seqs: int) -> StepInputs:
        """A synthetic prefill step of `num_tokens` tokens over `num_seqs` sequences, for memory profiling."""
        num_seqs = max(1, min(num_seqs, num_tokens))
        lens = np.full(num_seqs, num_tokens // num_seqs, dtype=np.int64)
        lens[: num_tokens % num_seqs] += 1
        cu = np.concatenate([[0], np.cumsum(lens)])
        blocks_per_seq = int(-(-lens.max() // self.block_size))
        table = np.arange(num_seqs * blocks_per_seq, dtype=np.int32).reshape(num_seqs, blocks_per_seq)
        positions = np.concatenate([np.arange(n) for n in lens])
        seq_of_token = np.repeat(np.arange(num_seqs), lens)
        slots = table[seq_of_token, positions // self.block_size].astype(np.int64) * self.block_size \
            + positions % self.block_size
        return StepInputs(
            input_ids=np.zeros(num_tokens, dtype=np.int64), positions=positions, slot_mapping=slots,
            query_start_loc=cu.astype(np.int32), seq_lens=lens.astype(np.int32), block_tables=table,
            logits_indices=cu[1:] - 1, sample_rows=list(range(num_seqs)), num_decodes=int((lens == 1).sum()),
            max_query_len=int(lens.max()), max_seq_len=int(lens.max()))

