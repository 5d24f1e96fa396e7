"""`llmfleet bench allreduce`: all-reduce latency per message size, NCCL against the custom kernels.

One process per GPU (`--world-size`, default every visible GPU). Per size: NCCL eager, NCCL captured in a CUDA
graph (how the decode step replays it), and with 2 or more GPUs the custom one-shot and two-shot all-reduces
(llmfleet/model/custom_allreduce.py), each checked against NCCL's sum first. Times are the median over `--iters`
calls, in microseconds, from CUDA events (host wall time on CPU, where only gloo runs). One JSON record goes to
benchmarks/results/<device>/.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}


def parse_size(text: str) -> int:
    """8K -> 8192, 1M -> 1048576, 512 -> 512 (bytes)."""
    text = text.strip().upper().removesuffix("B")
    if text and text[-1] in _UNITS:
        return int(float(text[:-1]) * _UNITS[text[-1]])
    return int(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", nargs="+", default=["8K", "32K", "128K", "512K", "2M", "8M"],
                   help="message sizes in bytes (suffix K, M), e.g. 8K 64K 1M 8M")
    p.add_argument("--world-size", type=int, default=None, help="processes, one per GPU (default: every GPU)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (cpu: gloo, eager only)")
    p.add_argument("--device-name", default=None)
    p.add_argument("--results-dir", default="benchmarks/results")
    p.add_argument("--no-save", action="store_true")


def run(args: argparse.Namespace) -> int:
    import multiprocessing

    import torch

    from llmfleet.bench.results import write_result

    cuda = args.device != "cpu" and torch.cuda.is_available()
    world = args.world_size or (torch.cuda.device_count() if cuda else 2)
    sizes = [parse_size(s) for s in args.sizes]
    context = multiprocessing.get_context("spawn")
    queue = context.SimpleQueue()
    folder = tempfile.mkdtemp(prefix="llmfleet-allreduce-")
    procs = [context.Process(target=_rank_main, args=(r, world, cuda, sizes, args.dtype, args.iters,
                                                      f"file://{folder}/store", queue)) for r in range(world)]
    for proc in procs:
        proc.start()
    rows = queue.get()
    for proc in procs:
        proc.join()
    if isinstance(rows, str):
        raise RuntimeError(f"all-reduce bench failed: {rows}")
    record = dict(shape="allreduce", workload=f"tp{world}", world_size=world, dtype=args.dtype, iters=args.iters,
                  backend="nccl" if cuda else "gloo", rows=rows,
                  device=args.device_name or (torch.cuda.get_device_name(0) if cuda else "cpu"),
                  nccl_env={k: v for k, v in os.environ.items() if k.startswith(("NCCL_", "TORCH_SYMM"))})
    _print(rows)
    if not args.no_save:
        print("wrote", write_result(record, "allreduce", args.results_dir))
    return 0 if all(proc.exitcode == 0 for proc in procs) else 1


def _rank_main(rank: int, world: int, cuda: bool, sizes: list[int], dtype_name: str, iters: int,
               init_method: str, queue) -> None:
    import traceback

    import torch
    import torch.distributed as dist

    try:
        if cuda:
            torch.cuda.set_device(rank)
        dist.init_process_group("nccl" if cuda else "gloo", init_method=init_method, rank=rank, world_size=world)
        rows = _measure_all(rank, world, cuda, sizes, getattr(torch, dtype_name), iters)
        if rank == 0:
            queue.put(rows)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException as exc:  # noqa: BLE001 - the parent must learn why
        traceback.print_exc()
        if rank == 0:
            queue.put(f"rank {rank}: {type(exc).__name__}: {exc}")
        raise SystemExit(1) from exc


def _measure_all(rank: int, world: int, cuda: bool, sizes: list[int], dtype, iters: int) -> list[dict]:
    import torch
    import torch.distributed as dist

    from llmfleet.model.custom_allreduce import CustomAllReduce, symmetric_memory_available

    device = torch.device(f"cuda:{rank}" if cuda else "cpu")
    custom = None
    if cuda and world > 1 and symmetric_memory_available():
        custom = CustomAllReduce(dist.group.WORLD, device, max(sizes), dtype)
    rows = []
    for size in sizes:
        x = torch.randn(size // dtype.itemsize, device=device).to(dtype)   # [N], a different x per rank
        reference = x.clone()
        dist.all_reduce(reference)
        row = dict(bytes=size, nccl_us=_time(lambda: dist.all_reduce(x.clone()), iters, cuda))
        if cuda:
            row["nccl_graph_us"] = _time_graph(lambda buf: dist.all_reduce(buf), x, iters)
        if custom is not None:
            for name, fn in (("one_shot", custom.one_shot), ("two_shot", custom.two_shot)):
                got = fn(x.clone())
                row[f"{name}_max_err"] = float((got.float() - reference.float()).abs().max())
                row[f"{name}_us"] = _time(lambda fn=fn: fn(x.clone()), iters, cuda)
                row[f"{name}_graph_us"] = _time_graph(fn, x, iters)
        rows.append(row)
    return rows


def _time(fn, iters: int, cuda: bool) -> float:
    """Median microseconds of fn() (the clone inside is timed too, alike for every method)."""
    import torch
    import torch.distributed as dist

    for _ in range(5):
        fn()
    dist.barrier()
    times = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
        else:
            began = time.perf_counter()
            fn()
            times.append((time.perf_counter() - began) * 1e6)
    return statistics.median(times)


def _time_graph(fn, x, iters: int) -> float:
    """Median microseconds per call of fn(buffer) captured `iters` times in one CUDA graph, replayed."""
    import torch
    import torch.distributed as dist

    buf = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn(buf)   # warm-up outside the capture (NCCL's communicator exists before capturing)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(iters):
            fn(buf)
    graph.replay()
    torch.cuda.synchronize()
    dist.barrier()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / iters


def _print(rows: list[dict]) -> None:
    keys = [k for k in rows[0] if k.endswith("_us")]
    print(f"{'bytes':>10} " + " ".join(f"{k:>16}" for k in keys))
    for row in rows:
        print(f"{row['bytes']:>10} " + " ".join(f"{row.get(k, float('nan')):16.1f}" for k in keys))
