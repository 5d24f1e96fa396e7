"""Append-only numpy arrays that readers may view without a lock.

The single writer appends past the published length; readers slice `[:len]` of whatever array they picked up.
Growing copies into a new, larger array and then publishes it (one attribute store, atomic under the GIL), so a
reader holding the old array still sees a consistent prefix.
"""
from __future__ import annotations

import numpy as np


class GrowableArray:
    """Rows of a fixed shape and dtype; `append` is amortized O(1), `view()` is lock-free."""

    def __init__(self, row_shape: tuple[int, ...], dtype, capacity: int = 1024):
        self._data = np.zeros((max(capacity, 8), *row_shape), dtype=dtype)
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def view(self) -> np.ndarray:
        """The published rows (a view: never copy it on the hot path)."""
        data, n = self._data, self._len
        return data[:n]

    @property
    def data(self) -> np.ndarray:
        """The backing array, capacity included (rows past `len` are unspecified)."""
        return self._data

    def append(self, rows: np.ndarray) -> int:
        """Append rows; returns the index of the first. Only one thread may write."""
        n = len(rows)
        self.reserve(self._len + n)
        start = self._len
        self._data[start:start + n] = rows
        self._len = start + n   # published only after the rows are written
        return start

    def reserve(self, capacity: int) -> None:
        if capacity <= len(self._data):
            return
        grown = np.zeros((max(capacity, 2 * len(self._data)), *self._data.shape[1:]), dtype=self._data.dtype)
        grown[:self._len] = self._data[:self._len]
        self._data = grown


class Bitmap:
    """A bit per label in faiss' IDSelectorBitmap layout (bit i is byte i >> 3, bit i & 7), writer-owned."""

    def __init__(self, capacity_bits: int = 1024):
        self._bytes = np.zeros((max(capacity_bits, 64) + 7) // 8, dtype=np.uint8)

    @property
    def bytes(self) -> np.ndarray:
        return self._bytes

    def reserve(self, bits: int) -> None:
        if (bits + 7) // 8 <= len(self._bytes):
            return
        grown = np.zeros(max((bits + 7) // 8, 2 * len(self._bytes)), dtype=np.uint8)
        grown[:len(self._bytes)] = self._bytes
        self._bytes = grown

    def set(self, labels: np.ndarray, value: bool) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) == 0:
            return
        self.reserve(int(labels.max()) + 1)
        data = self._bytes
        masks = (1 << (labels & 7)).astype(np.uint8)
        if value:
            np.bitwise_or.at(data, labels >> 3, masks)
        else:
            np.bitwise_and.at(data, labels >> 3, ~masks)

    def test(self, labels: np.ndarray) -> np.ndarray:
        data = self._bytes
        labels = np.asarray(labels, dtype=np.int64)
        inside = (labels >> 3) < len(data)
        out = np.zeros(len(labels), dtype=bool)
        idx = labels[inside]
        out[inside] = (data[idx >> 3] >> (idx & 7).astype(np.uint8)) & 1 == 1
        return out

    def range_mask(self, start: int, stop: int) -> np.ndarray:
        """Bits [start, stop) as booleans; `start` must be a multiple of 8."""
        data = self._bytes
        nbytes = (stop - start + 7) // 8
        chunk = data[start // 8:start // 8 + nbytes]
        bits = np.unpackbits(chunk, bitorder="little")
        if len(bits) < stop - start:
            bits = np.concatenate([bits, np.zeros(stop - start - len(bits), np.uint8)])
        return bits[:stop - start].astype(bool)


def pack_labels(labels: np.ndarray, nbits: int) -> np.ndarray:
    """A fresh IDSelectorBitmap-layout bitmap of `nbits` bits with `labels` set."""
    mask = np.zeros(((nbits + 7) // 8) * 8, dtype=bool)
    mask[labels] = True
    return np.packbits(mask, bitorder="little")
