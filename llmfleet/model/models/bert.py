"""BERT-family encoders (all-MiniLM-L6-v2 and other sentence-transformers models): bidirectional attention over
each sequence, no KV cache.

A step's flat batch of T tokens from B sequences runs through the feed-forward parts unpadded; only attention pads
them into [B, L] (L = the longest query) with a key mask, so every token attends to all tokens of its own sequence
and to nothing else. Encoder requests are never chunked and never hit the prefix cache: each sequence arrives whole
in one step and `positions` are its tokens' indices. Module names follow the Hugging Face checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmfleet.model.layers.attention import AttentionMetadata


class BertEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # One segment per sequence: token type 0 everywhere (sentence-transformers' single-text encoding).
        hidden = self.word_embeddings(input_ids) + self.position_embeddings(positions) \
            + self.token_type_embeddings.weight[0]
        return self.LayerNorm(hidden)                                                  # [T, H]


class PackedLinear(nn.Linear):
    """One linear holding several of the checkpoint's (query, key, value: one GEMM instead of three); each part's
    weight and bias load into their rows."""

    def __init__(self, in_features: int, part_sizes: list[int], parts: tuple[str, ...]):
        super().__init__(in_features, sum(part_sizes))
        self.packed_shards = parts
        self._rows = dict(zip(parts, zip([sum(part_sizes[:i]) for i in range(len(parts))], part_sizes)))
        self.weight.weight_loader = self.bias.weight_loader = self._load

    def _load(self, param: nn.Parameter, tensor: torch.Tensor, shard_id: str) -> None:
        start, size = self._rows[shard_id]
        param.data[start:start + size].copy_(tensor)


class BertSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.qkv = PackedLinear(config.hidden_size, [config.hidden_size] * 3, ("query", "key", "value"))

    def forward(self, hidden: torch.Tensor, layout: "PaddedLayout") -> torch.Tensor:
        # hidden: [T, H] -> qkv padded [B, L, 3, heads, D] -> q, k, v: [B, heads, L, D]; attention stays within
        # each sequence (the key mask hides the padding and every other sequence)
        qkv = layout.pad(self.qkv(hidden)).unflatten(-1, (3, self.num_heads, self.head_dim))
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.key_mask)       # [B, heads, L, D]
        return layout.unpad(out.transpose(1, 2).flatten(-2))                           # [T, H]


class BertAttentionOutput(nn.Module):
    """dense + dropout-free residual LayerNorm (the shape of both BertSelfOutput and BertOutput)."""

    def __init__(self, in_size: int, hidden_size: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(in_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


class BertAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        setattr(self, "self", BertSelfAttention(config))   # the checkpoint's name: attention.self.query...
        self.output = BertAttentionOutput(config.hidden_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, layout: "PaddedLayout") -> torch.Tensor:
        return self.output(getattr(self, "self")(hidden, layout), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        if config.hidden_act not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"hidden_act: only gelu variants are supported for BERT, got {config.hidden_act!r}")
        self.approximate = "none" if config.hidden_act == "gelu" else "tanh"
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden), approximate=self.approximate)               # [T, I]


class BertLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertAttentionOutput(config.intermediate_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, layout: "PaddedLayout") -> torch.Tensor:
        hidden = self.attention(hidden, layout)                                        # post-norm block
        return self.output(self.intermediate(hidden), hidden)


class BertEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class PaddedLayout:
    """Where each of a step's T flat tokens sits in a padded [B, L] grid, built on the device without a sync."""

    def __init__(self, positions: torch.Tensor, meta: AttentionMetadata):
        lengths = (meta.query_start_loc[1:meta.num_seqs + 1] - meta.query_start_loc[:meta.num_seqs]).long()  # [B]
        self.shape = (meta.num_seqs, meta.max_query_len)
        seq_of_token = torch.repeat_interleave(torch.arange(meta.num_seqs, device=positions.device), lengths,
                                               output_size=positions.numel())
        self.index = seq_of_token * meta.max_query_len + positions                    # [T] into B * L
        grid = torch.arange(meta.max_query_len, device=positions.device)
        self.key_mask = (grid[None, :] < lengths[:, None])[:, None, None, :]          # [B, 1, 1, L]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(self.shape[0] * self.shape[1], x.shape[-1])
        return out.index_copy_(0, self.index, x).view(*self.shape, x.shape[-1])       # [B, L, H]

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, x.shape[-1]).index_select(0, self.index)                 # [T, H]


class BertModel(nn.Module):
    """Encoder over one flat batch of whole sequences -> final hidden states [T, H] (no pooler: pooling is the
    engine's, as the model folder's sentence-transformers config says)."""

    is_encoder = True   # no KV cache, no logits; requests are pooling requests, never chunked
    # checkpoint module -> (our packed module, part): attention.self.{query,key,value} -> attention.self.qkv
    packed_modules_mapping = {"query": ("qkv", "query"), "key": ("qkv", "key"), "value": ("qkv", "value")}
    ignored_checkpoint_prefixes = ("pooler.",)   # BERT's [CLS] pooler head: sentence embeddings do not use it

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """input_ids, positions: LongTensor [T] (positions restart at 0 in each sequence) -> hidden [T, H]."""
        layout = PaddedLayout(positions, meta)
        hidden = self.embeddings(input_ids, positions)
        for layer in self.encoder.layer:
            hidden = layer(hidden, layout)
        return hidden

    def attention_layers(self) -> list:
        return []   # nothing for the runner to bind a KV cache to
