"""The LoRA adapters one replica serves, by name (what a request's `model` field may name besides the base)."""
from __future__ import annotations

import itertools

from llmfleet.protocol.lora import LoRARequest, read_adapter
from llmfleet.server.errors import APIError


class AdapterRegistry:
    """Adapter name -> LoRARequest. `enabled` False (the engine has no LoRA): loading is refused."""

    def __init__(self, enabled: bool, max_rank: int, base_names: tuple[str, ...]):
        self.enabled, self.max_rank, self.base_names = enabled, max_rank, base_names
        self.adapters: dict[str, LoRARequest] = {}
        self._paths: dict[str, str] = {}     # every name ever loaded -> its latest folder
        self._ids = itertools.count(1)

    def get(self, name: str | None) -> LoRARequest | None:
        return self.adapters.get(name) if name else None

    def load(self, name: str, path: str) -> tuple[LoRARequest, bool]:
        """Serves the folder under `name`; (its request, whether the name held other weights before). ValueError
        (for a 400) when LoRA is off, the name is taken, or the folder is bad."""
        if not self.enabled:
            raise ValueError("lora_name: this server serves no adapters (start it with --enable-lora)")
        if not name or name in self.base_names or name in self.adapters:
            raise ValueError(f"lora_name: {name!r} is already served (pick another name)")
        read_adapter(path, self.max_rank)
        request = LoRARequest(name, next(self._ids), path)
        reused = self._paths.get(name, path) != path
        self.adapters[name], self._paths[name] = request, path
        return request, reused

    def unload(self, name: str) -> None:
        if name not in self.adapters:
            raise APIError(404, f"The adapter `{name}` is not loaded", "lora_name", "model_not_found")
        del self.adapters[name]
