"""Files to text, text to overlapping token windows (OpenAI's static chunking strategy).

Tokens are the embedding model's own (its tokenizer.json, loaded with `tokenizers`), so a chunk of N tokens is
what the model will see; a chunk's text is the exact span of the original between its first and last token.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass

from tokenizers import Tokenizer

DEFAULT_MAX_TOKENS = 800        # OpenAI's defaults for "auto" chunking
DEFAULT_OVERLAP_TOKENS = 400
TEXT_EXTENSIONS = (".txt", ".md", ".markdown", ".text", ".rst", ".csv", ".json", ".html", ".htm", ".py")


@dataclass(frozen=True, slots=True)
class ChunkingStrategy:
    max_chunk_size_tokens: int = DEFAULT_MAX_TOKENS
    chunk_overlap_tokens: int = DEFAULT_OVERLAP_TOKENS

    def __post_init__(self) -> None:
        if not 100 <= self.max_chunk_size_tokens <= 4096:
            raise ValueError("chunking_strategy.static.max_chunk_size_tokens: must be in [100, 4096], got "
                             f"{self.max_chunk_size_tokens}")
        if not 0 <= self.chunk_overlap_tokens <= self.max_chunk_size_tokens // 2:
            raise ValueError("chunking_strategy.static.chunk_overlap_tokens: must be in [0, max_chunk_size_tokens "
                             f"/ 2], got {self.chunk_overlap_tokens}")

    @classmethod
    def parse(cls, spec, default: "ChunkingStrategy") -> "ChunkingStrategy":
        """From the request's `chunking_strategy` ({"type": "auto"} or {"type": "static", "static": {...}})."""
        if spec is None or (isinstance(spec, dict) and spec.get("type") == "auto"):
            return default
        if not isinstance(spec, dict) or spec.get("type") != "static" or not isinstance(spec.get("static"), dict):
            raise ValueError('chunking_strategy: {"type": "auto"} or {"type": "static", "static": {...}} expected')
        static = spec["static"]
        for name in ("max_chunk_size_tokens", "chunk_overlap_tokens"):
            if not isinstance(static.get(name), int) or isinstance(static.get(name), bool):
                raise ValueError(f"chunking_strategy.static.{name}: an integer expected")
        return cls(static["max_chunk_size_tokens"], static["chunk_overlap_tokens"])

    def as_json(self) -> dict:
        return {"type": "static", "static": {"max_chunk_size_tokens": self.max_chunk_size_tokens,
                                             "chunk_overlap_tokens": self.chunk_overlap_tokens}}


class Chunker:
    """Splits text into windows of the tokenizer's tokens."""

    def __init__(self, tokenizer_path: str):
        path = os.path.join(tokenizer_path, "tokenizer.json") if os.path.isdir(tokenizer_path) else tokenizer_path
        if not os.path.exists(path):
            raise ValueError(f"retrieval tokenizer: no tokenizer.json at {tokenizer_path}")
        self.tokenizer = Tokenizer.from_file(path)
        self.tokenizer.no_truncation()

    def split(self, text: str, strategy: ChunkingStrategy) -> list[str]:
        """Windows of `max_chunk_size_tokens` tokens, each starting `max - overlap` tokens after the previous."""
        offsets = [span for span in self.tokenizer.encode(text, add_special_tokens=False).offsets if span[1] > span[0]]
        if not offsets:
            return [text.strip()] if text.strip() else []
        size, step = strategy.max_chunk_size_tokens, strategy.max_chunk_size_tokens - strategy.chunk_overlap_tokens
        chunks = []
        for start in range(0, len(offsets), step):
            window = offsets[start:start + size]
            chunks.append(text[window[0][0]:window[-1][1]])
            if start + size >= len(offsets):
                break
        return chunks


def extract_text(filename: str, data: bytes) -> str:
    """The text of an uploaded file: plain text and markdown as they are, PDFs through their text layer."""
    if data[:5] == b"%PDF-" or filename.lower().endswith(".pdf"):
        return _pdf_text(data)
    if not filename.lower().endswith(TEXT_EXTENSIONS) and b"\x00" in data[:4096]:
        raise ValueError(f"file: {filename!r} is neither text, markdown nor a PDF")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"file: {filename!r} is not UTF-8 text") from None


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        pages = PdfReader(io.BytesIO(data)).pages
        return "\n\n".join(page.extract_text() or "" for page in pages)
    except (PdfReadError, ValueError, KeyError) as exc:
        raise ValueError(f"file: not a readable PDF ({exc})") from None
