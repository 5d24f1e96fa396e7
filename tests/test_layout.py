"""The package's layering (DESIGN.md): import-linter's contracts in pyproject.toml hold, and protocol/ stays light."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    command = [str(lint)] if lint.exists() else [sys.executable, "-m", "importlinter.cli"]
    result = subprocess.run(command + ["--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "broken" not in result.stdout.split("Contracts:")[-1].replace("0 broken", "")


def test_protocol_imports_without_torch_or_fastapi():
    code = ("import sys, llmfleet.protocol.config, llmfleet.protocol.sampling_params, llmfleet.protocol.outputs, "
            "llmfleet.protocol.block_hash, llmfleet.protocol.scheduler_output, llmfleet.protocol.kv_events, llmfleet.protocol.openai.chat, "
            "llmfleet.protocol.openai.completions; "
            "bad = [m for m in ('torch', 'fastapi', 'transformers', 'numpy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
