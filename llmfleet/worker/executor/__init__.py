"""Where the model runs: in the engine core's process (a ModelRunner) or in one worker process per rank.

`build_executor` is the one dispatch point: both answer the engine core's runner calls (`launch`, `collect`,
`num_blocks`, `info`, ...); `shutdown_executor` stops worker processes where there are some.
"""
from __future__ import annotations

from llmfleet.protocol.config import EngineConfig


def build_executor(config: EngineConfig, device: str, dtype, model_path: str, hf_config=None):
    """A ModelRunner in this process, or a MultiprocExecutor driving `tensor_parallel_size` workers."""
    if config.uses_worker_processes:
        from llmfleet.worker.executor.multiproc import MultiprocExecutor

        return MultiprocExecutor(config, device, dtype, model_path, hf_config)
    from llmfleet.worker.runner import ModelRunner

    return ModelRunner(config, device, dtype, model_path, hf_config)


def shutdown_executor(executor) -> None:
    """Stops the executor's worker processes, if it has any (an in-process runner has nothing to stop)."""
    shutdown = getattr(executor, "shutdown", None)
    if shutdown is not None:
        shutdown()
