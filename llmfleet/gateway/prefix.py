"""Prefix-aware routing: send a prompt where most of its leading blocks are cached, unless that replica is busier.

score = cached fraction of the prompt's blocks - load_weight x (in-flight above the least loaded) / (mean + 1).
Hot-prefix guard: a replica may take a request only while its in-flight count, plus this one, stays within
`balance_ratio` x the least loaded replica's (or it is the least loaded); so one system prompt shared by every
request spreads over all replicas instead of pinning them to the first one that cached it.
A request for a LoRA adapter (a model a replica lists with a `parent`) is hashed in that adapter's namespace, the
one its replicas cache it under, so it is routed by affinity with earlier requests for the same adapter.
"""
from __future__ import annotations

from llmfleet.gateway.index import PrefixIndex
from llmfleet.gateway.policies import RoutingRequest, least_loaded
from llmfleet.gateway.prompts import PromptHasher
from llmfleet.gateway.replica import Replica
from llmfleet.protocol.lora import lora_salt


class PrefixAware:
    name = "prefix-aware"

    def __init__(self, index: PrefixIndex, hasher: PromptHasher | None, load_weight: float = 1.0,
                 balance_ratio: float = 1.5):
        self.index, self.hasher = index, hasher
        self.load_weight, self.balance_ratio = load_weight, balance_ratio

    def choose(self, request: RoutingRequest, candidates: list[Replica]) -> Replica:
        hashes = self._hashes(request, candidates)
        allowed = self._balanced(candidates)
        if not hashes:
            request.predicted_cached_tokens = 0 if self.hasher is not None else None
            return least_loaded(allowed)
        matches = self.index.match(hashes, [r.url for r in allowed])
        low = min(r.in_flight for r in allowed)
        mean = sum(r.in_flight for r in allowed) / len(allowed)

        def score(r: Replica):
            load = (r.in_flight - low) / (mean + 1)
            return matches[r.url] / len(hashes) - self.load_weight * load, -r.in_flight, -r.routed

        best = max(allowed, key=score)
        request.predicted_cached_tokens = matches[best.url] * self.hasher.block_size
        self.index.record(best.url, hashes)
        return best

    def _hashes(self, request: RoutingRequest, candidates: list[Replica]) -> list[bytes]:
        """The prompt's block hashes that a replica could serve from cache (computed once per request). The
        engine always computes the prompt's last token, so a block ending at the prompt's end never counts."""
        if "hashes" not in request.cache:
            ids = self.hasher.token_ids(request.path, request.payload) if self.hasher is not None else None
            if not ids:
                request.cache["hashes"] = []
            else:
                usable = (len(ids) - 1) // self.hasher.block_size
                salt = lora_salt(request.model) if _is_adapter(request.model, candidates) else ""
                request.cache["hashes"] = self.hasher.block_hashes(ids[:usable * self.hasher.block_size], salt)
        return request.cache["hashes"]

    def _balanced(self, candidates: list[Replica]) -> list[Replica]:
        low = min(r.in_flight for r in candidates)
        return [r for r in candidates if r.in_flight == low or r.in_flight + 1 <= self.balance_ratio * low]


def _is_adapter(model: str | None, candidates: list[Replica]) -> bool:
    """Whether some replica lists `model` as a LoRA adapter (a card with a base model as parent)."""
    return model is not None and any(card.get("id") == model and card.get("parent")
                                     for r in candidates for card in r.cards if isinstance(card, dict))
