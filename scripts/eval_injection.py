"""The prompt-injection guard's precision and recall, written as JSON under benchmarks/results/cpu-tenancy/:
on the hand-written held-out set (never trained on), for the classifier alone, the rules alone and both (the
guard); and, for comparison, on a random fifth of the training set held out from a model trained on the rest.
    python3 scripts/eval_injection.py [--threshold 0.5]
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmfleet.bench.results import write_result  # noqa: E402
from llmfleet.tenancy.guards import injection  # noqa: E402


def _report(rows: list[dict], model, threshold: float, **kw) -> dict:
    tp = fp = fn = tn = 0
    misses = []
    for row in rows:
        flagged = injection.score(row["text"], model, **kw) >= threshold
        tp += flagged and row["label"] == 1
        fp += flagged and row["label"] == 0
        fn += not flagged and row["label"] == 1
        tn += not flagged and row["label"] == 0
        if flagged != (row["label"] == 1):
            misses.append({"label": row["label"], "text": row["text"]})
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn, "errors": misses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    train, held = injection.load_rows("train"), injection.load_rows("heldout")
    start = time.perf_counter()
    model = injection.train(train)
    train_s = time.perf_counter() - start
    shuffled = random.Random(0).sample(train, len(train))
    fifth = len(shuffled) // 5
    split_model = injection.train(shuffled[fifth:])
    text = (ROOT / "llmfleet" / "tenancy" / "guards" / "pii.py").read_text()[:4096]
    start = time.perf_counter()
    for _ in range(20):
        injection.score(text, model)
    result = {
        "bench": "injection-guard", "threshold": args.threshold,
        "train": {"examples": len(train), "injections": sum(r["label"] for r in train), "seconds": round(train_s, 3)},
        "heldout": {"examples": len(held), "injections": sum(r["label"] for r in held),
                    "guard": _report(held, model, args.threshold),
                    "classifier_only": _report(held, model, args.threshold, use_rules=False),
                    "rules_only": _report(held, None, args.threshold, use_model=False)},
        "train_split_fifth": {"examples": fifth, "guard": _report(shuffled[:fifth], split_model, args.threshold)},
        "score_4kb_ms": round((time.perf_counter() - start) / 20 * 1e3, 3),
        "python": platform.python_version(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    result.update(workload="heldout", shape="logreg-ngrams", device="cpu-tenancy",
                  command=shlex.join(["python3", f"scripts/{Path(__file__).name}", *sys.argv[1:]]))
    out = write_result(result, "injection-guard", ROOT / "benchmarks" / "results")  # adds the commit and date
    summary = {k: {m: {x: v[x] for x in ("precision", "recall")} for m, v in result["heldout"].items()
                   if isinstance(v, dict)} for k in ("heldout",)}
    print(json.dumps(summary, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
