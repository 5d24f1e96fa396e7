"""`llmfleet bench conversation-memory`: a 50-turn conversation through a server mounting conversation memory
(`llmfleet serve --conversations ...`): a fact planted at turn 3, turns on other topics, then a question about the
fact at the last turn. Records each generated turn's history tokens against the budget, the prompt tokens the
model saw, and whether the answer names the fact.

With --stored-turns N the first N turns (user message and a short fixed reply) are added through the items API
instead of generated: the same memory path (token counts, embeddings, summaries by the served model), without
waiting for the model's replies on a slow CPU."""
from __future__ import annotations

import argparse
import time

import httpx

FACT = "By the way, my sister's name is Beatrice and she lives in Lisbon."
QUESTION = "What is my sister's name?"
ANSWER = "Beatrice"
TOPICS = ["the weather", "a good book", "cooking pasta", "learning to swim", "the history of tea", "jazz music",
          "planting tomatoes", "riding a bicycle", "the moon", "saving money", "a trip to the mountains",
          "painting with watercolors", "chess openings", "making bread", "bird watching", "the ocean"]


REPLIES = ["It is often sunny in spring.", "Many people enjoy reading novels.", "Boil the water before adding it.",
           "Practice helps a lot.", "Tea first came from China.", "Jazz began in New Orleans.",
           "Tomatoes need plenty of sun.", "Keep your balance and pedal.", "The moon has no air.",
           "Put a little aside every month.", "The air is thin up high.", "Use light colors first.",
           "Control the center of the board.", "Let the dough rise for an hour.", "Birds are most active at dawn.",
           "The ocean covers most of the planet."]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="a server with --conversations (its OpenAI root)")
    parser.add_argument("--model", default=None, help="the model to chat with (default: the server's)")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--budget", type=int, required=True, help="the server's --memory-token-budget")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--stored-turns", type=int, default=0, help="turns added through the items API")
    parser.add_argument("--device", default=None)


def _turn(client: httpx.Client, args, conversation: str, text: str) -> dict:
    body = {"conversation": conversation, "messages": [{"role": "user", "content": text}],
            "max_tokens": args.max_tokens, "temperature": 0}
    if args.model:
        body["model"] = args.model
    started = time.perf_counter()
    response = client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    answer = response.json()
    return {"history_tokens": int(response.headers["x-llmfleet-conversation-tokens"]),
            "recalled_items": response.headers["x-llmfleet-conversation-recalled"],
            "prompt_tokens": answer["usage"]["prompt_tokens"], "seconds": time.perf_counter() - started,
            "answer": answer["choices"][0]["message"]["content"]}


def run(args: argparse.Namespace) -> int:
    from llmfleet.bench.results import write_result

    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=600) as client:
        conversation = client.post("/v1/conversations", json={"metadata": {"bench": "memory"}}).json()["id"]
        turns = []
        for n in range(1, args.turns + 1):
            text = FACT if n == 3 else QUESTION if n == args.turns else (
                f"Tell me one short thing about {TOPICS[n % len(TOPICS)]}.")
            if n <= args.stored_turns:
                reply = "Nice, I will remember that." if n == 3 else REPLIES[n % len(REPLIES)]
                client.post(f"/v1/conversations/{conversation}/items", json={"items": [
                    {"role": "user", "content": text}, {"role": "assistant", "content": reply}]}).raise_for_status()
                continue
            turns.append(_turn(client, args, conversation, text))
            print(f"turn {n}: history {turns[-1]['history_tokens']} tokens, prompt {turns[-1]['prompt_tokens']}",
                  flush=True)
        items = client.get(f"/v1/conversations/{conversation}/items?limit=100").json()["data"]
    final = turns[-1]
    record = {"workload": "50-turn-planted-fact", "shape": args.model or "default-model", "turns": args.turns,
              "token_budget": args.budget, "max_history_tokens": max(t["history_tokens"] for t in turns),
              "within_budget": all(t["history_tokens"] <= args.budget for t in turns),
              "max_prompt_tokens": max(t["prompt_tokens"] for t in turns), "final_answer": final["answer"],
              "answer_names_fact": ANSWER.lower() in final["answer"].lower(), "fact": FACT, "question": QUESTION,
              "stored_items": len(items), "stored_turns": args.stored_turns, "per_turn": turns}
    if args.device:
        record["device"] = args.device
    path = write_result(record, "conversation-memory")
    print(f"answer: {final['answer']!r}; names the fact: {record['answer_names_fact']}; max history "
          f"{record['max_history_tokens']} / {args.budget} tokens; wrote {path}")
    return 0
