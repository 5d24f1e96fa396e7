"""Tokenise the stdlib corpus with the demo tokenizer: uint16 token streams for training and validation.

    python scripts/demo_corpus.py --tokenizer .demo_data/tokenizer --out .demo_data

Writes train.npy, validation.npy (files in sorted path order, each followed by <|endoftext|>) and corpus.json
(interpreter version, file and token counts, the tokenizer's sha256). Tokenise on the machine whose stdlib you want:
the GPU machine's Python differs, so the streams are made here and carried there.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmfleet.data.stdlib_corpus import SPLITS, encode_stream, load_split, stdlib_root  # noqa: E402

EOT = "<|endoftext|>"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, default=Path(".demo_data/tokenizer"))
    parser.add_argument("--out", type=Path, default=Path(".demo_data"))
    args = parser.parse_args()
    tok_file = args.tokenizer / "tokenizer.json"
    if not tok_file.is_file():
        raise ValueError(f"tokenizer: {str(tok_file)!r} not found; run scripts/train_demo_tokenizer.py first")
    tok = Tokenizer.from_file(str(tok_file))
    eot_id = tok.token_to_id(EOT)
    encode = lambda texts: [e.ids for e in tok.encode_batch(texts)]  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "stdlib": str(stdlib_root()),
            "tokenizer_sha256": hashlib.sha256(tok_file.read_bytes()).hexdigest(), "splits": {}}
    for split in SPLITS:
        files = load_split(split)
        stream = encode_stream([f.text for f in files], encode, eot_id)
        np.save(args.out / f"{split}.npy", stream)
        chars = sum(len(f.text) for f in files)
        meta["splits"][split] = {"files": len(files), "chars": chars, "tokens": int(stream.shape[0]),
                                 "chars_per_token": round(chars / max(1, stream.shape[0]), 3)}
        print(f"{split}: {len(files)} files, {chars} chars, {stream.shape[0]} tokens")
    (args.out / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
