"""Distillation (llmfleet/lifecycle/distill.py): a few steps on a tiny teacher lower a student's KL on held-out
prompts; the record's fields; student initialisation from the teacher; input formats; the CLI's validation."""
from __future__ import annotations

import json

import pytest
import torch

from llmfleet.entrypoints.cli import build_parser
from llmfleet.entrypoints.distill import check_args, parse_student_config
from llmfleet.lifecycle.distill import build_student, distill
from llmfleet.lifecycle.distill_data import row_to_example

RECORD_FIELDS = {"teacher", "student_config", "student_parameters", "examples", "teacher_generated",
                 "train_examples", "held_out_examples", "hyperparameters", "steps_done", "epochs", "train_seconds",
                 "held_out", "curve"}


def _rows(n: int) -> list[dict]:
    words = ["fox", "model", "cache", "tokens", "weather", "count", "answer", "class"]
    return [{"messages": [{"role": "user", "content": f"Tell me about the {words[i % 8]} number {i}."}]}
            for i in range(n)]


@pytest.fixture(scope="module")
def record(tiny_checkpoint, tmp_path_factory):
    teacher = tiny_checkpoint("llama")
    out = tmp_path_factory.mktemp("student")
    rows = _rows(38) + [{"prompt": "The quick brown fox", "response": "jumps over the lazy dog."}]
    rows += [{"prompt_token_ids": [40 + i, 90, 7 * i], "ignore_eos": True, "max_tokens": 20} for i in range(2)]
    return distill(str(teacher), rows, {"num_hidden_layers": 1, "init": "random"}, out, steps=24, batch_size=8,
                   lr=3e-3, alpha=0.8, top_k=16, max_new_tokens=12, held_out=0.25, device="cpu"), out


def test_training_lowers_the_kl_to_the_teacher_on_held_out_prompts(record):
    rec, _ = record
    before, after = rec["held_out"]["before"], rec["held_out"]["after"]
    assert after["tokens"] == before["tokens"] > 0
    assert after["kl"] < 0.8 * before["kl"], (before, after)
    assert rec["curve"][-1]["loss"] < rec["curve"][0]["loss"]


def test_the_record_and_the_student_folder(record):
    rec, out = record
    assert RECORD_FIELDS <= set(rec)
    assert json.loads((out / "distill.json").read_text())["held_out"] == rec["held_out"]
    assert rec["teacher_generated"] == 40 and rec["examples"] == 41      # the logged answer is kept
    assert rec["answer_tokens"] > 0
    assert rec["train_examples"] + rec["held_out_examples"] == rec["examples"]
    assert {"step", "loss", "kd", "ce"} <= set(rec["curve"][0])
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["dtype"] == "bfloat16"
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_the_student_starts_from_the_teachers_layers(tiny_checkpoint):
    from transformers import AutoModelForCausalLM
    teacher_path = tiny_checkpoint("llama")
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.float32)
    student, copied = build_student(str(teacher_path), {"num_hidden_layers": 1, "teacher_layers": [1]})
    assert torch.equal(student.model.layers[0].mlp.down_proj.weight, teacher.model.layers[1].mlp.down_proj.weight)
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert len(copied) == len(student.state_dict())
    with pytest.raises(ValueError, match="teacher_layers"):
        build_student(str(teacher_path), {"num_hidden_layers": 1, "teacher_layers": [5]})
    with pytest.raises(ValueError, match="student_config.no_such_field"):
        build_student(str(teacher_path), {"no_such_field": 3})


def test_rows_of_a_log_export_and_of_token_ids(tiny_checkpoint):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint("llama"))
    messages = [{"role": "user", "content": "Hello, world!"}]
    export_row = {"prompt": "user: Hello, world!", "response": "Fine, thank you.",
                  "request_json": json.dumps({"model": "m", "messages": messages})}
    example = row_to_example(export_row, tokenizer, 256)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert example.prompt_ids == tokenizer.encode(text, add_special_tokens=False)
    assert example.answer_ids == tokenizer.encode("Fine, thank you.", add_special_tokens=False) + [2]
    ids = row_to_example({"prompt_token_ids": list(range(10, 30)), "ignore_eos": True, "max_tokens": 5}, tokenizer, 8)
    assert ids.prompt_ids == list(range(22, 30)) and ids.answer_ids is None and ids.ignore_eos and ids.max_tokens == 5
    with pytest.raises(ValueError, match="max_tokens"):
        row_to_example({"prompt": "x", "max_tokens": 0}, tokenizer, 8)
    with pytest.raises(ValueError, match="data"):
        row_to_example({"text": "x"}, tokenizer, 8)


def test_cli_validation(tmp_path, tiny_checkpoint):
    teacher = str(tiny_checkpoint("llama"))
    parse = build_parser().parse_args
    base = ["distill", "--teacher", teacher, "--student-config", "{}", "--out", str(tmp_path / "s")]
    with pytest.raises(ValueError, match="--data / --repo-prompts"):
        check_args(parse(base))
    with pytest.raises(ValueError, match="--data / --repo-prompts"):
        check_args(parse(base + ["--data", str(tmp_path), "--repo-prompts", "10"]))
    with pytest.raises(ValueError, match="--data"):
        check_args(parse(base + ["--data", str(tmp_path / "missing")]))
    with pytest.raises(ValueError, match="--teacher"):
        check_args(parse(base[:2] + [str(tmp_path / "none")] + base[3:] + ["--repo-prompts", "5"]))
    check_args(parse(base + ["--init-only"]))
    with pytest.raises(ValueError, match="--student-config"):
        parse_student_config("{not json")
    with pytest.raises(ValueError, match="must be a JSON object"):
        parse_student_config("[1, 2]")
    path = tmp_path / "small.json"
    path.write_text('{"num_hidden_layers": 2}')
    assert parse_student_config(str(path)) == {"num_hidden_layers": 2}
    with pytest.raises(ValueError, match="steps"):
        distill(teacher, _rows(4), {}, tmp_path / "x", steps=0, device="cpu")
