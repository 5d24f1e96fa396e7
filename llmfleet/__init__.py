"""llmfleet: LLM serving — a paged-KV continuous-batching engine, an OpenAI-compatible server, a fleet gateway."""
from llmfleet.protocol.outputs import CompletionOutput, Logprob, RequestOutput
from llmfleet.protocol.sampling_params import SamplingParams

__version__ = "0.1.0"
__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput", "Logprob", "__version__"]


def __getattr__(name: str):
    # The engine pulls in torch and transformers: import it only when LLM is used.
    if name == "LLM":
        from llmfleet.entrypoints.llm import LLM
        return LLM
    raise AttributeError(f"module 'llmfleet' has no attribute {name!r}")
