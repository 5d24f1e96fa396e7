"""The EAGLE proposer: an EAGLE head (model/models/eagle.py) drafts k tokens from the target's own features.

After each target step that samples a sequence, the head catches up over the positions the target just computed:
draft position q gets the pair (f_q, x_{q+1}), f_q being the target's final hidden state at q from this step and
x_{q+1} the token known after it (a prompt token, an accepted draft, or the token just sampled). For a verify step
with a accepted drafts that is the sequence's first 1 + a rows; for a prefill chunk, every row of it. Its output at
the last position drafts the first token; k - 1 chained single-token steps then feed each output feature back with
the token it drafted. Drafts are argmax picks, verified as point masses, so sampled output keeps the target's
distribution and greedy output is the plain one.

KV: a one-layer cache with the target's block geometry, indexed by the target's block tables, like the draft model
proposer's (draft_model.py); chained drafts write into the scheduler's lookahead slots. Positions the target
computed while speculation was off (or in prefill chunks that did not sample) keep stale head KV: proposals get worse
there, outputs stay exact. The catch-up runs eagerly, the chain as a CUDA graph (eagle_chain.py); nothing waits on
the device until the drafts come back in one copy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from llmfleet.model.loader import _building_on
from llmfleet.model.models.eagle import EagleHead, eagle_layout, head_config
from llmfleet.model.source import resolve_model
from llmfleet.model.weights import iterate_checkpoint, load_weights
from llmfleet.protocol.speculative import SpeculativeConfig
from llmfleet.worker.spec_decode.eagle_chain import EagleChain
from llmfleet.worker.inputs import StepInputs
from llmfleet.worker.seq_state import SeqState
from llmfleet.worker.transfer import to_device


def load_eagle_head(path: str, hf_config, device: str, dtype: torch.dtype) -> EagleHead:
    """An EAGLE head from a folder of safetensors (+ config.json); ValueError naming the field otherwise."""
    folder = Path(path)
    if not folder.is_dir():   # a demo name
        folder = Path(resolve_model(path, skip_tokenizer_init=True).path)
    tensors = _head_tensors(folder)
    names = [n for n, _ in tensors]
    if eagle_layout(names) == "eagle3":
        raise ValueError("speculative_config.model: EAGLE-3 heads (midlayer.*) are not supported yet; use an "
                         "EAGLE head (fc.weight, layers.0.*)")
    own = None
    if (folder / "config.json").is_file():
        from transformers import AutoConfig
        own = AutoConfig.from_pretrained(folder, local_files_only=True)
    config = head_config(hf_config, own)
    if config.hidden_size != hf_config.hidden_size:
        raise ValueError(f"speculative_config.model: the head's hidden size {config.hidden_size} is not the "
                         f"target's {hf_config.hidden_size}")
    with _building_on(torch.device(device), dtype):
        head = EagleHead(config, fc_bias="fc.bias" in names)
    load_weights(head, iter(tensors))
    return head.eval().requires_grad_(False)


def _head_tensors(folder: Path) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of a head folder: its safetensors, else the pytorch_model.bin the EAGLE releases ship."""
    bin_file = folder / "pytorch_model.bin"
    if not any(folder.glob("*.safetensors")) and bin_file.is_file():
        return list(torch.load(bin_file, map_location="cpu", weights_only=True).items())
    return list(iterate_checkpoint(folder))


class EagleProposer:
    needs_hidden = True   # the runner keeps each step's final hidden states for it

    def __init__(self, runner, config: SpeculativeConfig):
        self.runner, self.config = runner, config
        self.chain: EagleChain | None = None
        self.head = load_eagle_head(config.model, runner.hf_config, runner.device, runner.dtype)
        self.layers = self.head.attention_layers()
        for layer in self.layers:
            layer.backend = runner.backend
        self.embed = runner.model.model.embed_tokens

    @property
    def bytes_per_block(self) -> int:
        layer, r = self.layers[0], self.runner
        return 2 * r.block_size * layer.num_kv_heads * layer.head_dim * r.kv_dtype.itemsize

    def allocate_cache(self, num_blocks: int) -> None:
        """The head's KV cache, then its chain buffers (CUDA graphs on a GPU without enforce_eager)."""
        layer, r = self.layers[0], self.runner
        layer.kv_cache = torch.zeros((2, num_blocks, r.block_size, layer.num_kv_heads, layer.head_dim),
                                     dtype=r.kv_dtype, device=r.device)
        spec, config = self.config, r.config
        max_batch = min(config.max_num_seqs, spec.disable_by_batch_size or config.max_num_seqs)
        max_blocks = -(-(r.max_model_len + spec.num_speculative_tokens + 1) // r.block_size)
        self.chain = EagleChain(self.head, self.embed, r.model.compute_logits, r.device, r.hf_config.hidden_size,
                                max_batch, spec.num_speculative_tokens - 1, max_blocks, r.max_model_len,
                                r.block_size)
        if r.device.startswith("cuda") and not config.enforce_eager:
            self.chain.capture()

    @torch.inference_mode()
    def propose(self, states: list[SeqState], lengths: dict[int, int], step=None) -> dict[int, list[int]]:
        """Up to lengths[seq_id] drafts per sequence that sampled in `step` (whose hidden states it reads)."""
        at = step.hidden_at if step is not None and step.hidden_at else {}
        states = [s for s in states if lengths.get(s.seq_id, 0) > 0 and s.seq_id in at]
        if not states:
            return {}
        rows, ids, positions, owners, last = [], [], [], [], []
        for b, s in enumerate(states):
            first_row, start = at[s.seq_id]
            count = len(s.token_ids) - 1 - start        # pairs (f_q, x_{q+1}) for q = start .. L - 2
            rows += range(first_row, first_row + count)
            ids += s.token_ids[start + 1:start + 1 + count]
            positions += range(start, start + count)
            owners += [b] * count
            last.append(len(rows) - 1)
        dev = self.runner.device
        features = step.hidden.index_select(0, to_device(rows, dev, torch.int64))
        out = self._forward(to_device(ids, dev, torch.int64), features, states, positions, owners)
        feature = out.index_select(0, to_device(last, dev, torch.int64))                  # [B, H]
        token = self.runner.model.compute_logits(feature).argmax(dim=-1)                  # [B]
        ends = [len(s.token_ids) - 1 for s in states]  # the newest token's position: drafts 2..k follow it
        rest = self.chain.run(token, feature, ends, _tables(states))                      # [B, k - 1]
        picked = torch.cat([token[:, None], rest], dim=1).tolist()                        # [B, k]
        for s in states:
            s.draft_probs = None   # point masses: verified with probability p(d)
        return {s.seq_id: picked[b][:lengths[s.seq_id]] for b, s in enumerate(states)}

    def _forward(self, ids: torch.Tensor, features: torch.Tensor, states: list[SeqState], positions: list[int],
                 owners: list[int]) -> torch.Tensor:
        """The head over one row per token (query length 1, keys 0..position): the catch-up."""
        r = self.runner
        pos = np.asarray(positions, dtype=np.int64)
        table = _tables(states)[np.asarray(owners)]
        slots = table[np.arange(len(owners)), pos // r.block_size].astype(np.int64) * r.block_size \
            + pos % r.block_size
        n = len(owners)
        inputs = StepInputs(
            input_ids=np.zeros(n, dtype=np.int64), positions=pos, slot_mapping=slots,
            query_start_loc=np.arange(n + 1, dtype=np.int32), seq_lens=(pos + 1).astype(np.int32),
            block_tables=table, logits_indices=np.arange(n), sample_rows=list(range(n)), num_decodes=n,
            max_query_len=1, max_seq_len=int(pos.max()) + 1)
        meta = r._metadata(inputs)
        return self.head(self.embed(ids), features, to_device(pos, r.device), meta)


def _tables(states: list[SeqState]) -> np.ndarray:
    """The sequences' block tables, [B, widest] int32, zero-padded."""
    table = np.zeros((len(states), max(len(s.block_ids) for s in states)), dtype=np.int32)
    for i, s in enumerate(states):
        table[i, :len(s.block_ids)] = s.block_ids
    return table
