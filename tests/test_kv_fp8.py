"""kv_cache_dtype="fp8": the cache in float8 e4m3 with per-layer scales, written and read by the torch reference
and the Triton kernels (under the interpreter on CPU), sized at one byte an element, scales from a checkpoint."""
from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

from llmfleet import LLM, SamplingParams
from llmfleet.model.layers.attention import TorchAttentionBackend
from llmfleet.model.loader import load_model
from tests.checkpoints import checkpoint
from tests.test_triton_attention import TritonAttentionBackend, make_batch, reference

FP8 = torch.float8_e4m3fn


def fp8_batch(seed: int):
    """A mixed step (decodes with padding, a prefill over a cached prefix) whose cache is fp8."""
    q, k, v, cache, meta, starts, seq_lens = make_batch([5, 20], [(7, 9)], 2, 2, 32, 4, torch.float32, "cpu", seed,
                                                        pad_decodes=1)
    meta.query_start_loc_cpu, meta.seq_lens_cpu = starts, seq_lens
    return q, k, v, cache, meta, starts, seq_lens


def run(backend, batch, cache, scales):
    q, k, v, _, meta, *_ = batch
    return backend.forward(q, k, v, cache, meta, 0.2, kv_scales=scales)


def test_fp8_cache_attention_stays_within_the_formats_error_of_full_precision():
    batch = fp8_batch(0)
    q, k, v, cache, meta, starts, seq_lens = batch
    exact, _ = reference(q, k, v, cache, meta, starts, seq_lens, 0.2)          # float64 cache
    scales = (torch.tensor(0.5), torch.tensor(2.0))
    stored = (cache.double() / torch.tensor([0.5, 2.0]).double().view(2, 1, 1, 1, 1)).to(FP8)
    exact_of_stored, _ = reference(q, k, v, stored.double() * torch.tensor([0.5, 2.0]).double().view(2, 1, 1, 1, 1),
                                   meta, starts, seq_lens, 0.2)
    out = run(TorchAttentionBackend(), batch, stored.clone(), scales)
    # e4m3 keeps 3 mantissa bits: each k, v within 1/16 of its value, the attention output within a few percent
    err = (out.double() - exact).norm() / exact.norm()
    assert 0 < err < 0.06, err
    # prefix tokens come from the cache as stored: the reference over the dequantized cache differs only by the
    # rounding of this step's new k, v
    assert (out.double() - exact_of_stored).norm() / exact.norm() < 0.04


def test_triton_kernels_read_fp8_like_the_torch_reference():
    """Decode (direct and split) and prefill over an fp8 cache that the torch reference wrote: the same numbers."""
    batch = fp8_batch(1)
    q, k, v, cache, meta, *_ = batch
    scales = (torch.tensor(0.25), torch.tensor(1.5))
    written = (cache / torch.tensor([0.25, 1.5]).view(2, 1, 1, 1, 1)).to(FP8)
    ref = run(TorchAttentionBackend(), batch, written, scales)                # writes this step's k, v first
    meta.slot_mapping = torch.full_like(meta.slot_mapping, -1)                 # the kernels only read here
    for splits in (1, 3):  # direct decode, and split partitions merged (v_scale folded into each partition)
        out = TritonAttentionBackend(num_splits=splits).forward(q, k, v, written.clone(), meta, 0.2,
                                                                 kv_scales=scales)
        assert torch.allclose(out, ref, atol=1e-5), splits


def test_triton_kv_write_divides_by_the_scales_and_saturates():
    """Values that are e4m3 numbers times the scale are stored exactly (Triton's interpreter rounds some other
    values to the wrong binade, so rounding itself is checked on the GPU: tests/test_kv_fp8_gpu.py)."""
    from llmfleet.kernels.kv_write import write_kv
    gen = torch.Generator().manual_seed(2)
    codes = torch.randn(6, 2, 16, generator=gen).mul(8).to(FP8).float()       # representable in e4m3
    codes[0, 0, :2] = torch.tensor([1000.0, -1000.0])                          # beyond 448: saturate
    cache = torch.zeros(2, 4, 4, 2, 16, dtype=FP8)
    slots = torch.tensor([0, 5, -1, 9, 14, 3])
    write_kv(cache, codes * 0.5, codes * 3.0, slots, (torch.tensor(0.5), torch.tensor(3.0)))
    flat = cache.view(2, 16, 2, 16).float()
    expected = codes.clamp(-448, 448)
    keep = slots >= 0
    assert torch.equal(flat[0, slots[keep]], expected[keep]) and torch.equal(flat[1, slots[keep]], expected[keep])
    assert flat[:, [1, 2]].abs().sum() == 0                                    # slot -1 wrote nothing


def test_fp8_kv_cache_doubles_the_blocks_and_generates():
    path = str(checkpoint("llama"))
    opts = dict(device="cpu", dtype="bfloat16", skip_tokenizer_init=True, cpu_kv_cache_bytes=1 << 20)
    auto, fp8 = LLM(path, **opts), LLM(path, kv_cache_dtype="fp8", **opts)
    assert fp8.engine.runner.kv_caches[0].dtype == FP8
    assert fp8.engine.runner.num_blocks == 2 * auto.engine.runner.num_blocks
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    prompts = [[5, 77, 123, 9, 41], [300, 41, 8, 250]]
    a = [o.outputs[0].token_ids for o in auto.generate(prompts, params, use_tqdm=False)]
    b = [o.outputs[0].token_ids for o in fp8.generate(prompts, params, use_tqdm=False)]
    # No token agreement asserted: the tiny test model's attention is sharp enough (weights drawn with std 0.2)
    # that e4m3's 1/16 steps on k move its logits by ~1; the attention tests above bound the error instead.
    assert [len(ids) for ids in b] == [len(ids) for ids in a] == [6, 6]
    assert fp8.engine.kv.num_free_blocks == fp8.engine.runner.num_blocks  # every block came back


def test_kv_scales_load_from_the_checkpoint(tmp_path):
    import shutil
    folder = tmp_path / "scaled"
    shutil.copytree(checkpoint("llama"), folder)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.1.self_attn.k_scale"] = torch.tensor(0.125)
    tensors["model.layers.1.self_attn.v_scale"] = torch.tensor([0.5, 0.75])  # per head: the largest is kept
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    model, _, _ = load_model(str(folder), torch.float32, "cpu")
    attn = model.model.layers[1].self_attn.attn
    assert (attn.k_scale.item(), attn.v_scale.item()) == (0.125, 0.75)
    assert model.model.layers[0].self_attn.attn.k_scale.item() == 1.0  # absent: 1.0
