"""The Grafana dashboard over the fleet's Prometheus metrics: the engines' `vllm:*` series and the gateway's
`llmfleet_gateway_*` ones, selected by the labels the ServiceMonitors give them (namespace, service, pod).

deploy/grafana/llmfleet.json is this module's output (`python -m llmfleet.deploy.grafana > deploy/grafana/
llmfleet.json`; a test keeps them equal and checks that every expression names only metrics the code exports).
"""
from __future__ import annotations

import json

ENGINES = 'namespace=~"$namespace",service=~"$service"'
GATEWAY = 'namespace=~"$namespace"'
RATE = "$__rate_interval"


def _quantiles(metric: str, by: str = "") -> list[tuple[str, str]]:
    group = f"le{', ' + by if by else ''}"
    return [(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{ENGINES}}}[{RATE}])))",
             f"p{round(q * 100)}{' {{' + by + '}}' if by else ''}") for q in (0.5, 0.9, 0.99)]


# (title, unit, [(expr, legend)], width); rows start with a title alone
PANELS: list = [
    ("Fleet",),
    ("Requests per second by status", "reqps",
     [(f"sum by (status) (rate(llmfleet_gateway_requests_total{{{GATEWAY}}}[{RATE}]))", "{{status}}")], 8),
    ("Routing decisions by replica", "reqps",
     [(f"sum by (replica, policy) (rate(llmfleet_gateway_requests_total{{{GATEWAY}}}[{RATE}]))",
       "{{replica}} ({{policy}})")], 8),
    ("Traffic split by model version", "reqps",
     [(f'sum by (version) (rate(llmfleet_gateway_requests_total{{{GATEWAY},version!=""}}[{RATE}]))', "{{version}}"),
      (f"sum by (version) (rate(llmfleet_gateway_shadow_requests_total{{{GATEWAY}}}[{RATE}]))", "shadow {{version}}")],
     8),
    ("Retries, broken streams and rejections", "reqps",
     [(f"sum by (reason) (rate(llmfleet_gateway_retries_total{{{GATEWAY}}}[{RATE}]))", "retry: {{reason}}"),
      (f"sum(rate(llmfleet_gateway_stream_errors_total{{{GATEWAY}}}[{RATE}]))", "stream broke"),
      (f"sum by (code) (rate(llmfleet_gateway_rejected_total{{{GATEWAY}}}[{RATE}]))", "rejected: {{code}}")], 8),
    ("Circuit state by replica (0 closed, 1 half-open, 2 open)", "none",
     [(f"max by (replica) (llmfleet_gateway_circuit_state{{{GATEWAY}}})", "{{replica}}")], 8),
    ("Replicas healthy, draining; requests in flight", "none",
     [(f"max by (replica) (llmfleet_gateway_replica_healthy{{{GATEWAY}}})", "healthy {{replica}}"),
      (f"max by (replica) (llmfleet_gateway_replica_draining{{{GATEWAY}}})", "draining {{replica}}"),
      (f"sum by (replica) (llmfleet_gateway_in_flight{{{GATEWAY}}})", "in flight {{replica}}")], 8),
    ("Prefix routing: cached prompt tokens predicted vs. hit by the engines", "short",
     [(f"sum by (source) (rate(llmfleet_gateway_cache_hit_tokens_total{{{GATEWAY}}}[{RATE}]))", "{{source}}"),
      (f"sum(rate(llmfleet_gateway_predicted_cached_tokens_total{{{GATEWAY}}}[{RATE}]))", "predicted (all)"),
      (f"sum(rate(llmfleet_gateway_kv_event_batches_lost_total{{{GATEWAY}}}[{RATE}]))", "KV event batches lost")],
     8),
    ("Tiers chosen and escalations", "reqps",
     [(f"sum by (tier) (rate(llmfleet_gateway_tier_decisions_total{{{GATEWAY}}}[{RATE}]))", "{{tier}}"),
      (f"sum by (from_tier, to_tier, reason) (rate(llmfleet_gateway_tier_escalations_total{{{GATEWAY}}}[{RATE}]))",
       "{{from_tier}} -> {{to_tier}} ({{reason}})")], 8),
    ("Gateway added latency", "s",
     [(f"histogram_quantile({q}, sum by (le) (rate(llmfleet_gateway_added_latency_seconds_bucket{{{GATEWAY}}}"
       f"[{RATE}])))", f"p{round(q * 100)}") for q in (0.5, 0.99)], 8),
    ("Engines",),
    ("Finished requests per second by reason", "reqps",
     [(f"sum by (service, finished_reason) (rate(vllm:request_success_total{{{ENGINES}}}[{RATE}]))",
       "{{service}} {{finished_reason}}")], 8),
    ("Time to first token", "s", _quantiles("vllm:time_to_first_token_seconds"), 8),
    ("Time per output token", "s", _quantiles("vllm:request_time_per_output_token_seconds"), 8),
    ("End-to-end request latency", "s", _quantiles("vllm:e2e_request_latency_seconds"), 8),
    ("Queue time", "s", _quantiles("vllm:request_queue_time_seconds"), 8),
    ("Inter-token latency", "s", _quantiles("vllm:inter_token_latency_seconds"), 8),
    ("Requests running and waiting", "short",
     [(f"sum by (service) (vllm:num_requests_running{{{ENGINES}}})", "running {{service}}"),
      (f"sum by (service) (vllm:num_requests_waiting{{{ENGINES}}})", "waiting {{service}}")], 8),
    ("KV-cache usage by pod", "percentunit",
     [(f"max by (pod, model_name) (vllm:kv_cache_usage_perc{{{ENGINES}}})", "{{pod}}")], 8),
    ("Prefix-cache hit rate", "percentunit",
     [(f"sum by (service) (rate(vllm:prefix_cache_hits_total{{{ENGINES}}}[{RATE}])) / sum by (service) "
       f"(rate(vllm:prefix_cache_queries_total{{{ENGINES}}}[{RATE}]))", "{{service}}")], 8),
    ("Tokens per second", "short",
     [(f"sum by (service) (rate(vllm:prompt_tokens_total{{{ENGINES}}}[{RATE}]))", "prompt {{service}}"),
      (f"sum by (service) (rate(vllm:generation_tokens_total{{{ENGINES}}}[{RATE}]))", "generated {{service}}")], 8),
    ("Preemptions per second", "short",
     [(f"sum by (service) (rate(vllm:num_preemptions_total{{{ENGINES}}}[{RATE}]))", "{{service}}")], 8),
]


def _panel(panel_id: int, spec: tuple, x: int, y: int) -> dict:
    title, unit, queries, width = spec
    return {"id": panel_id, "type": "timeseries", "title": title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": width, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10}},
                            "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
                         "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                        for i, (expr, legend) in enumerate(queries)]}


def _variable(name: str, label: str, query: str) -> dict:
    return {"name": name, "label": label, "type": "query", "datasource": {"type": "prometheus",
                                                                          "uid": "${datasource}"},
            "query": {"query": query, "refId": name}, "definition": query, "refresh": 2, "includeAll": True,
            "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "sort": 1}


def dashboard() -> dict:
    panels, x, y = [], 0, 0
    for spec in PANELS:
        if len(spec) == 1:
            y += 8 if x else 0
            x = 0
            panels.append({"id": len(panels) + 1, "type": "row", "title": spec[0], "collapsed": False,
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
            y += 1
            continue
        if x + spec[3] > 24:
            x, y = 0, y + 8
        panels.append(_panel(len(panels) + 1, spec, x, y))
        x += spec[3]
    datasource = {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                  "current": {}, "hide": 0}
    return {"uid": "llmfleet", "title": "llmfleet", "description": "Gateway routing and engine serving metrics",
            "tags": ["llmfleet", "vllm"], "timezone": "browser", "schemaVersion": 39, "version": 1,
            "editable": True, "graphTooltip": 1, "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": [
                datasource,
                _variable("namespace", "Namespace", "label_values(vllm:num_requests_running, namespace)"),
                _variable("service", "Engine group",
                          'label_values(vllm:num_requests_running{namespace=~"$namespace"}, service)')]},
            "annotations": {"list": []}, "panels": panels}


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    print(render(), end="")
