"""The browser page (llmfleet/export/static) in headless Chromium, on onnxruntime-web's wasm backend (and its WebGPU
backend on SwiftShader's software adapter), decodes the same greedy tokens as onnxruntime (CPU) for a tiny exported
model, through its KV cache.

Chromium is Debian's package (scripts/install.sh --test), driven by Playwright; the .wasm binaries come from the
cache that install.sh --test fills (llmfleet.export.web.ensure_wasm, a pinned and sha256-checked npm tarball).
"""
from __future__ import annotations

import os

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("playwright")

from llmfleet.export.onnx_export import export_onnx  # noqa: E402
from llmfleet.export.runtime import OnnxDecoderSession  # noqa: E402
from llmfleet.export.web import ensure_wasm, start_page_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
# A software WebGPU adapter (SwiftShader's Vulkan) for headless Chromium without a GPU
WEBGPU_FLAGS = ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader",
                "--use-webgpu-adapter=swiftshader", "--disable-vulkan-surface"]
PROMPTS = [[1, 5, 77, 200], [1, 42, 43, 44, 45, 46]]
NEW_TOKENS = 8

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                                reason=f"no Chromium at {CHROMIUM} (scripts/install.sh --test installs it)")


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    out = export_onnx(str(tiny_checkpoint("qwen3")), tmp_path_factory.mktemp("onnx-browser"))
    server = start_page_server(out, wasm_dir=ensure_wasm())
    yield out, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as instance:
        yield instance


def open_page(playwright, exported, backend: str, flags=()):
    """(tab on the page with ?backend=..., export folder); the browser closes when the generator ends."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", *flags])
    tab = browser.new_page()
    tab.goto(exported[1] + f"?backend={backend}")
    yield tab, exported[0]
    browser.close()


@pytest.fixture(scope="module")
def page(playwright, exported):
    yield from open_page(playwright, exported, "wasm")


@pytest.mark.parametrize("file", ["model.onnx", "model.int8.onnx"])
def test_browser_greedy_tokens_equal_onnxruntime(page, file):
    tab, out = page
    session = OnnxDecoderSession(out, file)
    for prompt in PROMPTS:
        result = tab.evaluate("([ids, n, file]) => window.llmfleetGreedy(ids, n, {file})", [prompt, NEW_TOKENS, file])
        assert result["backend"] == "wasm"
        assert result["tokens"] == session.greedy(prompt, NEW_TOKENS).tokens
        assert len(result["per_token_ms"]) == NEW_TOKENS - 1 and result["first_token_ms"] > 0


def test_page_form_shows_tokens_through_the_vocab(page):
    tab, out = page
    tab.fill("#ids", "1,5,77,200")
    tab.fill("#max", "4")
    tab.click("#run")
    tab.wait_for_function("document.getElementById('out').textContent.includes('[')", timeout=30000)
    expected = OnnxDecoderSession(out).greedy(PROMPTS[0], 4).tokens
    assert tab.text_content("#out").endswith("[" + ", ".join(map(str, expected)) + "]")
    assert tab.text_content("#status").startswith("wasm: first token")


@pytest.mark.slow
def test_webgpu_backend_on_a_software_adapter_gives_the_same_tokens(playwright, exported):
    for tab, out in open_page(playwright, exported, "webgpu", WEBGPU_FLAGS):
        if not tab.evaluate("async () => !!(navigator.gpu && await navigator.gpu.requestAdapter())"):
            pytest.skip("this Chromium build has no SwiftShader WebGPU adapter")
        result = tab.evaluate("([ids, n]) => window.llmfleetGreedy(ids, n)", [PROMPTS[0], NEW_TOKENS])
        assert result["backend"] == "webgpu"
        assert result["tokens"] == OnnxDecoderSession(out).greedy(PROMPTS[0], NEW_TOKENS).tokens


def test_server_refuses_a_folder_without_an_export(tmp_path):
    with pytest.raises(ValueError, match="export_dir"):
        start_page_server(tmp_path, wasm_dir=tmp_path)


def test_wasm_cache_holds_the_pinned_files():
    from llmfleet.export.web import WASM_SHA256, _file_sha256

    folder = ensure_wasm()
    assert {name: _file_sha256(folder / name) for name in WASM_SHA256} == WASM_SHA256
