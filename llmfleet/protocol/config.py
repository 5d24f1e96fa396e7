"""Engine configuration: one slotted dataclass, validated on construction.

Derived runtime values (the KV block count once memory is measured, the model's shape, the torch dtype and device)
live in the worker and the model, never here: an EngineConfig is immutable once built. Imports no torch, so the API
server process and the gateway can build and validate one.
"""
from __future__ import annotations

from dataclasses import dataclass

from llmfleet.protocol.kv_events import replay_endpoint
from llmfleet.protocol.pooling_params import check_pooling_method
from llmfleet.protocol.speculative import SpeculativeConfig

QUANTIZATIONS = ("int8", "int4", "fp8", "sparse24")  # linear-layer methods (llmfleet.model.layers.quantization)
KV_CACHE_DTYPES = ("auto", "fp8")        # auto: the model dtype; fp8: float8 e4m3 with per-layer scales
DTYPES = ("auto", "float32", "fp32", "float", "bfloat16", "bf16", "float16", "fp16", "half")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    model: str
    device: str = "auto"
    dtype: str = "auto"
    # KV cache
    block_size: int = 16
    num_kv_blocks: int | None = None          # None: size from free device memory after a profiling pass
    gpu_memory_utilization: float = 0.85      # fraction of total device memory the engine may take
    cpu_kv_cache_bytes: int = 1 << 30         # KV budget on CPU, where there is no free-memory probe
    enable_prefix_caching: bool = True
    # Scheduling
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192        # token budget per step; smaller = lower ITL, larger = throughput
    max_model_len: int | None = None          # None: the model's max_position_embeddings
    # Execution
    attention_backend: str = "auto"           # auto | torch | triton
    enforce_eager: bool = False               # True disables CUDA graphs
    async_scheduling: bool = True             # schedule step N+1 while step N runs on the device
    cuda_graph_max_batch: int = 256
    cuda_graph_max_tokens: int = 1024         # steps up to this many tokens replay piecewise graphs; 0: eager
    load_format: str = "auto"                 # auto (safetensors) | dummy (random weights, for benchmarks)
    quantization: str | None = None           # int8 | int4 | fp8 (None: the checkpoint's own, else unquantized)
    kv_cache_dtype: str = "auto"              # auto (model dtype) | fp8 (e4m3: half the bytes, twice the blocks)
    tokenizer: str | None = None              # None: the model folder
    skip_tokenizer_init: bool = False         # True: load no tokenizer; prompts are token ids, outputs have no text
    # Fleet
    kv_events_endpoint: str | None = None     # e.g. tcp://127.0.0.1:5557: publish prefix-cache events (replay: +1)
    # Embeddings
    pooling: str | None = None                # mean | last | cls; None: the model folder's (sentence-transformers)
    #                                           config, else mean for encoders and last for decoders
    # Speculative decoding: a SpeculativeConfig, or its dict / JSON form (parsed on construction); None: off
    speculative_config: SpeculativeConfig | None = None
    # LoRA adapters (protocol/lora.py): requests may name one; up to max_loras of them share a step, each in a
    # device slot of rank max_lora_rank; max_cpu_loras adapter weights stay in host memory (None: all seen)
    enable_lora: bool = False
    max_loras: int = 8
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    # Parallelism (docs/parallelism.md): worker processes per engine core (one per GPU), and engine cores behind
    # one API server. uni: the model runs in the engine-core process; mp: in worker processes; auto: mp when
    # tensor_parallel_size > 1
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    distributed_executor_backend: str = "auto"  # auto | uni | mp

    def __post_init__(self) -> None:
        _positive(self, "block_size", "max_num_seqs", "max_num_batched_tokens", "cuda_graph_max_batch", "max_loras")
        if self.max_lora_rank not in (8, 16, 32, 64):
            raise ValueError(f"max_lora_rank: must be 8, 16, 32 or 64, got {self.max_lora_rank!r}")
        if self.max_cpu_loras is not None and self.max_cpu_loras < 1:
            raise ValueError(f"max_cpu_loras: must be >= 1 or None, got {self.max_cpu_loras!r}")
        if self.cuda_graph_max_tokens < 0:
            raise ValueError(f"cuda_graph_max_tokens: must be >= 0, got {self.cuda_graph_max_tokens}")
        if self.num_kv_blocks is not None and self.num_kv_blocks < 1:
            raise ValueError(f"num_kv_blocks: must be >= 1 or None, got {self.num_kv_blocks}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len: must be >= 1, got {self.max_model_len}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization: must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.attention_backend not in ("auto", "torch", "triton"):
            raise ValueError(f"attention_backend: unknown value {self.attention_backend!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: unknown value {self.dtype!r}; use one of {', '.join(DTYPES)}")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ValueError(f"device: unknown value {self.device!r}; use auto, cpu or cuda[:N]")
        if self.kv_events_endpoint is not None:
            replay_endpoint(self.kv_events_endpoint)  # ValueError naming kv_events_endpoint
        check_pooling_method(self.pooling)
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization: unknown value {self.quantization!r}; use one of "
                             f"{', '.join(QUANTIZATIONS)}")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype: unknown value {self.kv_cache_dtype!r}; use one of "
                             f"{', '.join(KV_CACHE_DTYPES)}")
        if self.load_format not in ("auto", "dummy"):
            raise ValueError(f"load_format: unknown value {self.load_format!r}")
        object.__setattr__(self, "speculative_config", SpeculativeConfig.parse(self.speculative_config))
        _check_parallel(self)

    @property
    def uses_worker_processes(self) -> bool:
        """The model runs in worker processes (one per tensor-parallel rank), not in the engine core's."""
        return self.distributed_executor_backend == "mp" or (
            self.distributed_executor_backend == "auto" and self.tensor_parallel_size > 1)


def _check_parallel(cfg: EngineConfig) -> None:
    _positive(cfg, "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")
    if cfg.distributed_executor_backend not in ("auto", "uni", "mp"):
        raise ValueError(f"distributed_executor_backend: unknown value {cfg.distributed_executor_backend!r}; "
                         "use auto, uni or mp")
    if cfg.distributed_executor_backend == "uni" and cfg.tensor_parallel_size > 1:
        raise ValueError("distributed_executor_backend: uni runs one process; tensor_parallel_size="
                         f"{cfg.tensor_parallel_size} needs mp (or auto)")
    if cfg.pipeline_parallel_size > 1:
        raise ValueError(f"pipeline_parallel_size: pipeline parallelism is not available yet, got "
                         f"{cfg.pipeline_parallel_size}; use tensor_parallel_size")


def _positive(cfg, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: must be a positive integer, got {value!r}")
