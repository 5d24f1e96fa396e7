"""The history a conversation's next prompt carries, within a token budget: the most recent turns verbatim (up to
`recent_share` of the budget), the running summary of older turns, and the older turns most similar to the new
one (recalled verbatim: a summary keeps the gist, not every name or number), in their original order, placed last
before the new turn."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmfleet.apps.memory.items import as_message

SUMMARY_INTRO = "Summary of the earlier conversation:\n"
RECALL_INTRO = "Earlier turns of this conversation that may be relevant:\n"
MESSAGE_OVERHEAD = 4  # tokens a chat template spends around one message's text (role markers, separators)


@dataclass(slots=True)
class History:
    messages: list[dict]                       # what goes before the request's own messages
    tokens: int                                # their token count, within the budget
    recent: list[int] = field(default_factory=list)    # seqs kept verbatim as the latest turns
    recalled: list[int] = field(default_factory=list)  # older seqs recalled by similarity


def _recent(rows: list[dict], budget: int) -> tuple[list[dict], int]:
    """The longest run of newest rows whose tokens fit `budget`."""
    kept, used = [], 0
    for row in reversed(rows):
        if used + row["tokens"] > budget:
            break
        kept.append(row)
        used += row["tokens"]
    return kept[::-1], used


def _recalled(older: list[dict], query: np.ndarray | None, count: int, budget: int) -> tuple[list[dict], int]:
    """Up to `count` older rows most similar to `query` that fit `budget` (with the block's own overhead)."""
    embedded = [row for row in older if row["embedding"] is not None]
    if query is None or not embedded or count == 0:
        return [], 0
    vectors = np.stack([np.frombuffer(row["embedding"], dtype=np.float32) for row in embedded])
    order = np.argsort(-(vectors @ query), kind="stable")
    chosen, used = [], MESSAGE_OVERHEAD + 12  # the intro line
    for i in order[:count * 4]:
        row = embedded[int(i)]
        if len(chosen) == count:
            break
        if used + row["tokens"] <= budget:
            chosen.append(row)
            used += row["tokens"]
    return sorted(chosen, key=lambda r: r["seq"]), used if chosen else 0


def build_history(rows: list[dict], summary: str, summary_tokens: int, query: np.ndarray | None, budget: int,
                  recent_share: float, recall_count: int) -> History:
    """`rows`: the conversation's items in order (with tokens, embeddings); `query`: the new turn's vector."""
    recent, used = _recent(rows, int(budget * recent_share))
    first_recent = recent[0]["seq"] if recent else float("inf")
    older = [row for row in rows if row["seq"] < first_recent]
    messages: list[dict] = []
    if summary and older and used + summary_tokens + MESSAGE_OVERHEAD <= budget:
        messages.append({"role": "system", "content": SUMMARY_INTRO + summary})
        used += summary_tokens + MESSAGE_OVERHEAD
    recalled, recall_tokens = _recalled(older, query, recall_count, budget - used)
    messages += [as_message(row) for row in recent]
    if recalled:  # last, next to the new turn: what it asks about is nearest to it (small models attend there)
        lines = "\n".join(f"{row['role']}: {row['text']}" for row in recalled)
        messages.append({"role": "system", "content": RECALL_INTRO + lines})
        used += recall_tokens
    return History(messages, used, [r["seq"] for r in recent], [r["seq"] for r in recalled])
