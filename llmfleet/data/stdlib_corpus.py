"""The Python standard library as a deterministic text corpus (PSF license), split into train and validation.

Every machine with Python has it, so the demo models can be trained and evaluated without any download. The walk is
sorted, the split depends only on each file's path relative to the stdlib root (a stable hash, not Python's salted
`hash`), so two machines with the same Python version build byte-identical splits. A different patch version of
Python changes a few files, never which split a given path belongs to.

Token stream: files in sorted path order, each followed by one end-of-text token. Validation windows are cut from
the start of the validation stream with no overlap, so "the first N windows" names the same text everywhere.
"""
from __future__ import annotations

import hashlib
import os
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "validation")
DEFAULT_VAL_FRACTION = 0.04  # of files; about 2% of the text
# Directory names skipped anywhere in the tree: test suites, third-party packages, caches, and the codec tables in
# `encodings/` and `pydoc_data/` (generated character maps and documentation, not code anyone writes).
SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "encodings",
                       "pydoc_data"})
# Machine-specific build data, different on every interpreter build.
SKIP_PREFIXES = ("_sysconfigdata",)


@dataclass(frozen=True, slots=True)
class CorpusFile:
    relpath: str   # POSIX path relative to the stdlib root, e.g. "json/decoder.py"
    text: str


def stdlib_root() -> Path:
    """The running interpreter's standard-library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(relpath: str, val_fraction: float = DEFAULT_VAL_FRACTION) -> str:
    """'validation' for a stable ~val_fraction of paths, 'train' for the rest."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction: must be in (0, 1), got {val_fraction}")
    digest = hashlib.sha256(relpath.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
    return "validation" if bucket < val_fraction else "train"


def iter_source_paths(root: Path) -> Iterator[str]:
    """Relative POSIX paths of the .py files under root that belong in the corpus, in sorted order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("test_"))
        rel_dir = Path(dirpath).relative_to(root)
        for name in sorted(filenames):
            if name.endswith(".py") and not name.startswith(("test_",) + SKIP_PREFIXES):
                yield (rel_dir / name).as_posix()


def read_text(path: Path) -> str | None:
    """The file's text, or None when it is not valid UTF-8 or is empty."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.strip() else None


def load_split(split: str, root: str | Path | None = None,
               val_fraction: float = DEFAULT_VAL_FRACTION) -> list[CorpusFile]:
    """All corpus files of one split, sorted by relative path. root defaults to the running interpreter's stdlib."""
    if split not in SPLITS:
        raise ValueError(f"split: unknown value {split!r}; use one of {', '.join(SPLITS)}")
    root = Path(root) if root is not None else stdlib_root()
    if not root.is_dir():
        raise ValueError(f"root: {str(root)!r} is not a directory")
    files = []
    for relpath in iter_source_paths(root):
        if split_of(relpath, val_fraction) != split:
            continue
        text = read_text(root / relpath)
        if text is not None:
            files.append(CorpusFile(relpath, text))
    return files


def encode_stream(texts: Sequence[str], encode_batch: Callable[[list[str]], list[list[int]]],
                  eot_id: int) -> np.ndarray:
    """Token ids of the texts, each followed by eot_id, concatenated: uint16 [N] (the vocabulary fits 16 bits)."""
    if not 0 <= eot_id < 2**16:
        raise ValueError(f"eot_id: must fit in uint16, got {eot_id}")
    pieces = []
    for ids in encode_batch(list(texts)):
        pieces.append(np.asarray(ids, dtype=np.int64))
        pieces.append(np.asarray([eot_id], dtype=np.int64))
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    if stream.size and stream.max() >= 2**16:
        raise ValueError(f"encode_batch: token id {int(stream.max())} does not fit in uint16")
    return stream.astype(np.uint16)


def validation_windows(stream: np.ndarray, num_windows: int, seq_len: int) -> np.ndarray:
    """The first num_windows non-overlapping windows: int64 [num_windows, seq_len + 1].

    Window i holds tokens [i*seq_len, (i+1)*seq_len] inclusive, so it scores seq_len next-token predictions.
    """
    if num_windows < 1 or seq_len < 1:
        raise ValueError(f"num_windows, seq_len: must be >= 1, got {num_windows}, {seq_len}")
    needed = num_windows * seq_len + 1
    if stream.shape[0] < needed:
        raise ValueError(f"stream: {stream.shape[0]} tokens, {needed} needed for {num_windows} windows of {seq_len}")
    starts = np.arange(num_windows) * seq_len
    index = starts[:, None] + np.arange(seq_len + 1)[None, :]  # [W, L+1]
    return stream[index].astype(np.int64)
