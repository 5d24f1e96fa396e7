"""Small-integer codes for strings (teams, documents, ACL principals), so per-chunk columns are numpy arrays."""
from __future__ import annotations

OPEN = -1   # the principal code of chunks every member of their team may read


class Codes:
    """Append-only string <-> int table; lookups are lock-free (dict reads, list appends under the GIL)."""

    def __init__(self, names: list[str] | None = None):
        self.names: list[str] = list(names or ())
        self._code = {name: i for i, name in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def get(self, name: str) -> int | None:
        return self._code.get(name)

    def add(self, name: str) -> int:
        code = self._code.get(name)
        if code is None:
            code = len(self.names)
            self.names.append(name)
            self._code[name] = code
        return code
