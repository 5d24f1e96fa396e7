"""Prometheus metrics under vLLM's names, so existing dashboards and autoscalers work unchanged.

Per-request latencies are observed on the event loop (ServerMetrics is the engine client's RequestObserver): token
times are when each step's message reached the API server, queue times start from the core's own step start (one
monotonic clock for both processes). Gauges and token counters are read from a
fresh EngineStats at scrape time by a custom collector. One registry per app: two apps in a process never mix.

Queue time is measured from arrival to the start of the step that produced the request's first output: the engine
reports no separate "first scheduled" time, so for a prompt prefilled in several chunks it includes the earlier
chunks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from llmfleet.protocol.outputs import RequestOutput

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
_TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                  0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
_REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
                    480.0, 960.0, 1920.0, 7680.0)


@dataclass(slots=True)
class _Timing:
    arrival: float
    first_token: float | None = None
    last_token: float | None = None
    num_tokens: int = 0            # all choices together
    queue_observed: bool = False


class ServerMetrics:
    """The server's Prometheus registry. Observer methods run on the engine thread; `render` on the event loop."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.registry = CollectorRegistry()
        self._timings: dict[str, _Timing] = {}   # engine thread only
        self._stats: Any = None                  # the newest EngineStats, set before each scrape
        labels = ["model_name"]
        hist = lambda name, doc, buckets: Histogram(name, doc, labels, buckets=buckets,  # noqa: E731
                                                    registry=self.registry).labels(model_name)
        self.ttft = hist("vllm:time_to_first_token_seconds", "Time to first token.", _LATENCY_BUCKETS)
        self.itl = hist("vllm:inter_token_latency_seconds", "Time between output tokens.", _TOKEN_BUCKETS)
        self.tpot = hist("vllm:request_time_per_output_token_seconds",
                         "Decode time per output token after the first, per request.", _TOKEN_BUCKETS)
        # The name older dashboards read, beside the current one (same observations).
        self.tpot_alias = hist("vllm:time_per_output_token_seconds",
                               "Decode time per output token after the first, per request (older name of "
                               "vllm:request_time_per_output_token_seconds).", _TOKEN_BUCKETS)
        self.e2e = hist("vllm:e2e_request_latency_seconds", "Arrival to last token.", _REQUEST_BUCKETS)
        self.queue = hist("vllm:request_queue_time_seconds", "Arrival to the first step that ran the request.",
                          _LATENCY_BUCKETS)
        self.success = Counter("vllm:request_success", "Finished sequences by finish reason.",
                               ["model_name", "finished_reason"], registry=self.registry)
        self.registry.register(_StatsCollector(self))

    # ----------------------------------------------------------------------------- RequestObserver (engine thread)
    def on_added(self, request_id: str, arrival_time: float) -> None:
        self._timings[request_id] = _Timing(arrival_time)

    def on_output(self, output: RequestOutput, step_start: float, now: float) -> None:
        timing = self._timings.get(output.request_id)
        if timing is None:
            return
        if not timing.queue_observed:
            timing.queue_observed = True
            self.queue.observe(max(0.0, step_start - timing.arrival))
        choices = output.outputs if isinstance(output, RequestOutput) else ()  # pooling outputs have none
        num_tokens = sum(len(choice.token_ids) for choice in choices)
        if num_tokens > timing.num_tokens:
            if timing.first_token is None:
                timing.first_token = now
                self.ttft.observe(now - timing.arrival)
            else:
                self.itl.observe(now - timing.last_token)
            timing.last_token, timing.num_tokens = now, num_tokens
        if output.finished:
            self._finish(output, timing, now)

    def on_aborted(self, request_id: str, now: float) -> None:
        if self._timings.pop(request_id, None) is not None:
            self.success.labels(self.model_name, "abort").inc()

    def _finish(self, output: RequestOutput, timing: _Timing, now: float) -> None:
        del self._timings[output.request_id]
        self.e2e.observe(now - timing.arrival)
        if not isinstance(output, RequestOutput):  # a pooling request: one vector, no tokens
            self.success.labels(self.model_name, output.finish_reason).inc()
            return
        longest = max((len(choice.token_ids) for choice in output.outputs), default=0)
        if longest > 1 and timing.first_token is not None:
            per_token = (now - timing.first_token) / (longest - 1)
            self.tpot.observe(per_token)
            self.tpot_alias.observe(per_token)
        for choice in output.outputs:
            self.success.labels(self.model_name, choice.finish_reason or "abort").inc()

    # ----------------------------------------------------------------------------- scrape (event loop)
    def render(self, stats: Any) -> bytes:
        """The exposition text, with gauges and counters taken from `stats` (an EngineStats, or None)."""
        self._stats = stats
        return generate_latest(self.registry)


class _StatsCollector:
    """Gauges and cumulative counters straight from the engine's EngineStats."""

    _GAUGES = (("vllm:num_requests_running", "Requests in the running batch.", "num_running"),
               ("vllm:num_requests_waiting", "Requests waiting to be scheduled.", "num_waiting"),
               ("vllm:kv_cache_usage_perc", "Fraction of KV-cache blocks in use (0..1).", "kv_cache_usage"),
               ("vllm:gpu_cache_usage_perc", "Fraction of KV-cache blocks in use (0..1); older name of "
                "vllm:kv_cache_usage_perc.", "kv_cache_usage"))
    _COUNTERS = (("vllm:prompt_tokens", "Prefilled prompt tokens.", "prompt_tokens"),
                 ("vllm:generation_tokens", "Generated tokens.", "generation_tokens"),
                 ("vllm:num_preemptions", "Preemptions of running requests.", "num_preemptions"),
                 ("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", "prefix_cache_queries"),
                 ("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache.", "prefix_cache_hits"))

    _SPEC_COUNTERS = (
        ("vllm:spec_decode_num_drafts", "Verify passes of a sequence with draft tokens.", "spec_num_drafts"),
        ("vllm:spec_decode_num_draft_tokens", "Draft tokens verified.", "spec_num_draft_tokens"),
        ("vllm:spec_decode_num_accepted_tokens", "Draft tokens accepted.", "spec_num_accepted_tokens"))

    def __init__(self, metrics: ServerMetrics):
        self._metrics = metrics

    def collect(self):
        stats, name = self._metrics._stats, self._metrics.model_name
        if stats is None:
            return
        for metric, doc, field in self._GAUGES:
            family = GaugeMetricFamily(metric, doc, labels=["model_name"])
            family.add_metric([name], float(getattr(stats, field)))
            yield family
        for metric, doc, field in self._COUNTERS:
            family = CounterMetricFamily(metric, doc, labels=["model_name"])
            family.add_metric([name], float(getattr(stats, field)))
            yield family
        if stats.spec_accepted_per_pos:  # speculative decoding is on
            yield from self._spec(stats, name)

    def _spec(self, stats, name: str):
        for metric, doc, field in self._SPEC_COUNTERS:
            family = CounterMetricFamily(metric, doc, labels=["model_name"])
            family.add_metric([name], float(getattr(stats, field)))
            yield family
        family = CounterMetricFamily("vllm:spec_decode_num_accepted_tokens_per_pos",
                                     "Draft tokens accepted, by position in the draft (0: first).",
                                     labels=["model_name", "position"])
        for pos, count in enumerate(stats.spec_accepted_per_pos):
            family.add_metric([name, str(pos)], float(count))
        yield family

    def describe(self):
        return []  # unknown until the first scrape; registration must not call collect()
