"""A GGUF file converted once into a Hugging Face folder (config, float32 safetensors, tokenizer), cached on disk.

Reading a GGUF file means parsing its tokenizer and dequantizing every tensor, seconds of work at each start; the
converted folder loads like any checkpoint, memory-mapped. The cache is keyed by the file's name, size and
modification time, and each folder is written under a temporary name and renamed into place, so a reader never
sees half a folder and two processes converting at once do not collide.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from llmfleet.model.gguf_checkpoint import iterate_gguf, load_gguf_config, load_gguf_tokenizer

# Bump when the folder's layout or contents change: older folders are then ignored (and rebuilt beside them).
EXPORT_VERSION = 1


def cached_hf_folder(gguf_file: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """The converted folder of `gguf_file` under `cache_dir`, converting it first when it is not there yet."""
    gguf_file = Path(gguf_file).resolve()
    stat = gguf_file.stat()
    folder = Path(cache_dir) / f"{gguf_file.stem}-{stat.st_size}-{stat.st_mtime_ns}-v{EXPORT_VERSION}"
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        export_hf_folder(gguf_file, staging)
        os.rename(staging, folder)
    except OSError:
        if not (folder / "config.json").is_file():  # not another process that got there first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def export_hf_folder(gguf_file: str | os.PathLike, out: str | os.PathLike) -> None:
    """Write config.json, generation_config.json, model.safetensors (float32) and the tokenizer into `out`."""
    from safetensors.torch import save_file

    out = Path(out)
    config = load_gguf_config(gguf_file)
    tensors = dict(iterate_gguf(gguf_file, config))
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    generation = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    load_gguf_tokenizer(gguf_file).save_pretrained(out)
    (out / "source.json").write_text(json.dumps({"gguf_file": str(gguf_file)}) + "\n")
