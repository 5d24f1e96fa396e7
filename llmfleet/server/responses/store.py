"""Stored responses (`store`, the default): what `previous_response_id`, GET, DELETE and input_items read.

One replica keeps them in memory, the least recently used dropped beyond `max_entries`; a follow-up must reach
the replica that answered (the gateway's session affinity does), or it gets a 404 naming the id.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from llmfleet.server.errors import APIError


@dataclass(slots=True)
class StoredResponse:
    response: dict             # the response object as answered
    history: list[dict]        # the conversation's chat turns up to and including this answer (no instructions)
    input_items: list[dict]    # this request's input, as items with ids


class ResponseStore:
    def __init__(self, max_entries: int):
        if max_entries < 0:
            raise ValueError(f"max_stored_responses: must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def put(self, response_id: str, entry: StoredResponse) -> None:
        self._entries[response_id] = entry
        self._entries.move_to_end(response_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, response_id: str, param: str = "response_id") -> StoredResponse:
        """The entry; 404 naming `param` when it was never stored, was deleted or was dropped."""
        entry = self._entries.get(response_id)
        if entry is None:
            raise APIError(404, f"{param}: no stored response with id {response_id!r} on this server", param,
                           "not_found")
        self._entries.move_to_end(response_id)
        return entry

    def delete(self, response_id: str) -> None:
        self.get(response_id)
        del self._entries[response_id]

    def __len__(self) -> int:
        return len(self._entries)
