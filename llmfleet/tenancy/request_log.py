"""Request/response logs for evaluation and distillation, opt-in per key (metadata.log_requests = true).

Every record is PII-masked (guards/pii.py), then sealed with AES-256-GCM under a 32-byte key read from a file:
one line per record, base64 of (12-byte random nonce || ciphertext || tag), the file name bound in as associated
data so that lines cannot be moved between files unnoticed. Files rotate past `max_bytes`. `read_records` opens
them again (tests, the export command)."""
from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from llmfleet.tenancy.guards import pii

NONCE_BYTES = 12
SUFFIX = ".jsonl.enc"


def load_key(path: str) -> bytes:
    """A 32-byte key from a file holding it raw, as 64 hex characters, or as base64."""
    data = Path(path).read_bytes()
    if len(data) == 32:
        return data  # raw (not stripped: a random key may end in a whitespace byte)
    text = data.strip()
    for decode in (bytes.fromhex, lambda t: base64.b64decode(t, validate=True)):
        try:
            key = decode(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            continue
        if len(key) == 32:
            return key
    raise ValueError(f"request_log_key_file: {path} must hold a 32-byte key (raw, hex or base64)")


def redact(value):
    """`value` with every string PII-masked."""
    if isinstance(value, str):
        return pii.mask(value, pii.find(value))
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    return value


class RequestLog:
    def __init__(self, folder: str, key: bytes, max_bytes: int = 64 << 20):
        self._folder, self._aead, self._max = Path(folder), AESGCM(key), max_bytes
        self._folder.mkdir(parents=True, exist_ok=True)
        self._file = None
        self._name = ""

    def write(self, record: dict) -> None:
        if self._file is None or self._file.tell() >= self._max:
            self._rotate()
        plain = json.dumps(redact(record), separators=(",", ":")).encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plain, self._name.encode())
        self._file.write(base64.b64encode(nonce + sealed) + b"\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _rotate(self) -> None:
        self.close()
        now = time.time_ns()  # names sort in the order the files were opened
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 10**9))
        self._name = f"requests-{stamp}.{now % 10**9:09d}-{os.urandom(3).hex()}{SUFFIX}"
        self._file = open(self._folder / self._name, "ab", buffering=0)
        os.chmod(self._folder / self._name, 0o600)


def read_records(path: str | Path, key: bytes) -> Iterator[dict]:
    """The records of one log file; raises cryptography's InvalidTag on a wrong key or an altered line."""
    path, aead = Path(path), AESGCM(key)
    with open(path, "rb") as f:
        for line in f:
            raw = base64.b64decode(line.strip())
            yield json.loads(aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], path.name.encode()))


def log_files(folder: str | Path) -> list[Path]:
    return sorted(Path(folder).glob(f"*{SUFFIX}"))
