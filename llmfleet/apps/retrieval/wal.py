"""The write-ahead log of a collection: each write is appended and fsynced before it is acknowledged.

A record is `length (u32) | crc32 (u32) | msgpack body`. Replay reads records in order and stops at the first
torn or corrupt one (a write that never finished, hence was never acknowledged), truncating the file there so the
next append starts on a clean boundary. Log files are numbered; a snapshot records the first file it does not
cover, so recovery = load the snapshot, then replay the files from that number on.
"""
from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator

import msgspec

_HEADER = struct.Struct("<II")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def wal_path(folder: str, number: int) -> str:
    return os.path.join(folder, f"wal-{number:08d}.log")


def wal_numbers(folder: str) -> list[int]:
    """The numbers of the log files in `folder`, ascending."""
    names = (n for n in os.listdir(folder) if n.startswith("wal-") and n.endswith(".log"))
    return sorted(int(n[4:-4]) for n in names)


class WriteAheadLog:
    """An open log file that appends durable records."""

    def __init__(self, folder: str, number: int):
        self.folder, self.number = folder, number
        self._file = open(wal_path(folder, number), "ab", buffering=0)
        fsync_dir(folder)

    def append(self, records: list[dict]) -> None:
        """Write `records` and fsync; returns only once they are on stable storage."""
        frames = []
        for record in records:
            body = _encoder.encode(record)
            frames.append(_HEADER.pack(len(body), zlib.crc32(body)) + body)
        self._file.write(b"".join(frames))
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def replay(folder: str, number: int) -> Iterator[dict]:
    """The records of log file `number`, in order; a torn tail is cut off the file."""
    path = wal_path(folder, number)
    with open(path, "rb") as file:
        data = file.read()
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        body = data[offset + _HEADER.size:offset + _HEADER.size + length]
        if len(body) < length or zlib.crc32(body) != crc:
            break
        yield _decoder.decode(body)
        offset += _HEADER.size + length
    if offset < len(data):
        with open(path, "r+b") as file:
            file.truncate(offset)
            os.fsync(file.fileno())


def fsync_dir(folder: str) -> None:
    """Make a file creation or rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
