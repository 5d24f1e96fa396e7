"""Train the demo models' byte-level BPE tokenizer on the stdlib corpus's train split and save it as HF files.

    python scripts/train_demo_tokenizer.py --out .demo_data/tokenizer

Writes tokenizer.json, tokenizer_config.json, special_tokens_map.json and the chat template, loadable with
`transformers.AutoTokenizer.from_pretrained(out)`. Deterministic for a given corpus and `tokenizers` version.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmfleet.data.stdlib_corpus import load_split  # noqa: E402

EOT, IM_START, IM_END, PAD = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"
SPECIAL_TOKENS = [EOT, IM_START, IM_END, PAD]  # ids 0..3, in this order
# ChatML-style: every message is <|im_start|>role\ncontent<|im_end|>\n; a generation prompt opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE (GPT-2 pre-tokenization, no prefix space) with SPECIAL_TOKENS at ids 0..3.

    Every newline is a token of its own, never merged with the indentation after it. A prompt that ends at a line
    break ("def f(n):\n") then tokenises exactly as the same text does inside a longer file, so the model has seen
    what follows it; with "\n" + spaces merged, a bare "\n" token would only ever precede column 0.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("\n"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(token) == i, f"special token {token} got id {tok.token_to_id(token)}"
    return tok


def save_hf(tok: Tokenizer, out: Path, model_max_length: int) -> None:
    """Save as a fast HF tokenizer with bos/eos = <|endoftext|>, pad = <|pad|> and the chat template."""
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=PAD,
                                   unk_token=None, additional_special_tokens=[IM_START, IM_END],
                                   model_max_length=model_max_length, clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    # Written by hand so that older and newer transformers read the same thing: the generic fast class name, the
    # template inline as well as in chat_template.jinja, and the long-standing special-token keys.
    special = {"bos_token": EOT, "eos_token": EOT, "pad_token": PAD,
               "additional_special_tokens": [IM_START, IM_END]}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **special, "unk_token": None,
              "model_max_length": model_max_length, "clean_up_tokenization_spaces": False,
              "add_bos_token": False, "add_eos_token": False, "chat_template": CHAT_TEMPLATE}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".demo_data/tokenizer"))
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--model-max-length", type=int, default=512)
    args = parser.parse_args()
    if args.vocab_size < 512 or args.vocab_size > 2**16:
        raise ValueError(f"vocab_size: must be in [512, 65536], got {args.vocab_size}")
    texts = [f.text for f in load_split("train")]
    tok = train_tokenizer(texts, args.vocab_size)
    save_hf(tok, args.out, args.model_max_length)
    print(f"trained on {len(texts)} files, vocab {tok.get_vocab_size()}, saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
