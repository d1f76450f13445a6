"""Long-term and working memory: what a user said last week is recalled today, and a long
chat is trimmed to a token budget without breaking a turn.

    FLOWOPT_STRONG_URL=http://127.0.0.1:8001 python examples/memory.py

Needs the Qwen2.5-Coder-0.5B server (`flowopt backend up --model qwen0.5b`): it answers and
extracts the memories. The store (qdrant on disk + Mem0's sqlite history) lives in a
temporary directory here; in production leave ``data_dir`` out (``~/.cache/flowopt/memory``).
"""

from __future__ import annotations

import asyncio
import os
import tempfile

from flowopt import pipeline
from flowopt.memory import MemoryKey, MemoryMiddleware


def memory_line(result: object) -> str:
    hop = result.hops[-1]  # type: ignore[attr-defined]
    d = next(d for d in hop.response.decisions if d.middleware == "memory")
    keep = ("recalled", "tokens_injected", "recall_ms", "trimmed", "queued", "store_error")
    return " ".join(f"{k}={v}" for k, v in d.detail.items() if k in keep)


async def main() -> None:
    base_url = os.environ.get("FLOWOPT_STRONG_URL", "http://127.0.0.1:8001")
    model = os.environ.get("FLOWOPT_STRONG_MODEL", "qwen0.5b")
    with tempfile.TemporaryDirectory() as data_dir:
        memory = MemoryMiddleware(
            long_term=True, working_tokens=600, data_dir=data_dir, debounce_s=0.5
        )
        pipe = pipeline(
            "assistant",
            backend={"vllm": {"base_url": base_url, "model": model}},
            middleware=[memory],
            defaults={"temperature": 0, "max_tokens": 48},
            steps=[
                {"name": "answer", "system": "You are a friendly assistant.", "prompt": "{input}"}
            ],
        )
        async with pipe:
            # Monday: the user tells something about themselves.
            said = "I just adopted a beagle called Biscuit, and I'm allergic to peanuts."
            r = await pipe.ainvoke(said, user="alice", tenant="acme")
            print("monday:", r.text.strip(), "|", memory_line(r))
            # The answer came back before extraction; wait for the background queue here.
            assert memory.queue is not None and memory.queue.drain(timeout=300)
            assert memory.store is not None
            for m in memory.store.memories(MemoryKey("acme", user="alice")):
                print(f"  memory: {m.text!r} sources={list(m.sources)} at={m.at}")

            # A week later, a new session: the memories are recalled before the call.
            r = await pipe.ainvoke(
                "Suggest a snack I can share with my dog.", user="alice", tenant="acme"
            )
            print("next week:", r.text.strip(), "|", memory_line(r))

            # Another user (or tenant) recalls nothing of alice's.
            r = await pipe.ainvoke("What is my dog called?", user="bob", tenant="acme")
            print("bob:", r.text.strip(), "|", memory_line(r))

            # Working memory: a long chat is cut to the budget, oldest pairs first.
            chat = [{"role": "system", "content": "You are a friendly assistant."}]
            for i in range(30):
                chat += [
                    {"role": "user", "content": f"Tell me fact number {i} about beagles."},
                    {"role": "assistant", "content": "Beagles have a great sense of smell. " * 3},
                ]
            chat.append({"role": "user", "content": "Summarise in five words."})
            r = await pipe.ainvoke(chat, user="alice", tenant="acme")
            print("long chat:", r.text.strip(), "|", memory_line(r))

            print("forgot", memory.forget(tenant="acme", user="alice"), "memories of alice")


if __name__ == "__main__":
    asyncio.run(main())
