"""The browser page's runtime files and a tiny HTTP server for the page, its runtime and an export folder.

onnxruntime-web's JavaScript (ort.wasm.min.js, ort.webgpu.min.js and their .mjs loaders, ~220 KB) is vendored in
static/vendor/. Its WebAssembly binaries (15 MB for wasm, 29 MB for the WebGPU build) are too large to ship in
the package: `ensure_wasm()` downloads the pinned npm tarball once, checks its sha256, and keeps the two .wasm
files (each checked too) under ~/.cache/llmfleet/onnxruntime-web/<version>/.

Served paths: / and /page.js (static/), /vendor/* (vendored JS, then the cached wasm), /model/* (the export).
COOP/COEP headers make the page cross-origin isolated, so onnxruntime-web may use its threaded build.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import tarfile
import threading
import urllib.request
from pathlib import Path

ORT_WEB_VERSION = "1.31.1"
TARBALL_URL = f"https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{ORT_WEB_VERSION}.tgz"
TARBALL_SHA256 = "bdccdb9fbb9ab537247c0c734e9b1d2b1b338b4f2a09faa58f0dc1cfa27c312c"
WASM_SHA256 = {
    "ort-wasm-simd-threaded.wasm": "4b884c203b0fa48d057be3332c65513ff85aa3c5bddd6946acc0fab7ecda001d",
    "ort-wasm-simd-threaded.asyncify.wasm": "ca319e9539cd0f1e291cf56074760121eaf39650f5dbf84b6e52c07f4b2944ec",
}
STATIC_DIR = Path(__file__).resolve().parent / "static"


def wasm_cache_dir() -> Path:
    """$XDG_CACHE_HOME/llmfleet/onnxruntime-web/<version>, else under ~/.cache."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "llmfleet" / "onnxruntime-web" / ORT_WEB_VERSION


def ensure_wasm(cache_dir: Path | None = None) -> Path:
    """The folder holding the checked .wasm files, downloading the pinned tarball when any is missing."""
    folder = cache_dir or wasm_cache_dir()
    if all(_file_sha256(folder / name) == digest for name, digest in WASM_SHA256.items()):
        return folder
    with urllib.request.urlopen(TARBALL_URL, timeout=300) as response:
        blob = response.read()
    if _sha256(blob) != TARBALL_SHA256:
        raise RuntimeError(f"{TARBALL_URL}: sha256 {_sha256(blob)} is not the pinned {TARBALL_SHA256}")
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for name, digest in WASM_SHA256.items():
            data = tar.extractfile(f"package/dist/{name}").read()
            if _sha256(data) != digest:
                raise RuntimeError(f"{name}: sha256 {_sha256(data)} is not the pinned {digest}")
            tmp = folder / (name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(folder / name)
    return folder


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str | None:
    return _sha256(path.read_bytes()) if path.is_file() else None


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Maps /model/ to the export folder and /vendor/*.wasm to the cache; everything else is static/."""

    def __init__(self, *args, export_dir: Path, wasm_dir: Path, **kwargs):
        self.export_dir, self.wasm_dir = export_dir, wasm_dir
        super().__init__(*args, directory=str(STATIC_DIR), **kwargs)

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0].split("#", 1)[0]
        name = clean.rsplit("/", 1)[-1]
        if clean.startswith("/model/") and "/" not in clean[len("/model/"):] and name:
            return str(self.export_dir / name)
        if clean.startswith("/vendor/") and name in WASM_SHA256:
            return str(self.wasm_dir / name)
        return super().translate_path(path)

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):  # quiet: the page polls nothing, but tests read many files
        pass


def start_page_server(export_dir: str | Path, host: str = "127.0.0.1", port: int = 0,
                      wasm_dir: Path | None = None) -> http.server.ThreadingHTTPServer:
    """Serve the page for `export_dir` on a background thread; `server.server_address` gives the port."""
    folder = Path(export_dir).resolve()
    if not (folder / "export.json").is_file():
        raise ValueError(f"export_dir: no export.json in {folder} (run `llmfleet export onnx` first)")
    handler = functools.partial(_Handler, export_dir=folder, wasm_dir=wasm_dir or ensure_wasm())
    server = http.server.ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
