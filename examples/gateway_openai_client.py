"""Call a flowopt pipeline with the official OpenAI client — no flowopt code on this side.

Start a gateway first (any spec works; the demo's talks to a local vLLM server):

    flowopt serve src/flowopt/specs/demo.yaml --port 8000
    FLOWOPT_BASE_URL=http://127.0.0.1:8000 python examples/gateway_openai_client.py

``FLOWOPT_BASE_URL`` is the gateway (default http://127.0.0.1:8000; a bare vLLM server
works too, which is the point); ``FLOWOPT_API_KEY`` is needed only when the spec's
``gateway.api_keys`` is set.
"""

from __future__ import annotations

import os
import sys

import openai


def main() -> int:
    base = os.environ.get("FLOWOPT_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
    client = openai.OpenAI(
        base_url=base.removesuffix("/v1") + "/v1",
        api_key=os.environ.get("FLOWOPT_API_KEY", "none"),  # ignored without gateway keys
        max_retries=2,  # retries 429/503 honouring Retry-After
    )
    models = [m.id for m in client.models.list()]
    model = models[0]  # the backend's model; a gateway also lists the pipeline's graph
    print(f"models: {models}")

    # 1. A plain JSON answer, with the trace id the gateway put in its headers.
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "What is vLLM? One sentence."}],
        max_tokens=32,
        temperature=0,
        user="example-user",
    )
    answer = raw.parse()
    print(f"answer: {answer.choices[0].message.content!r}")
    print(f"usage: {answer.usage}")
    print(f"trace id: {raw.headers.get('x-flowopt-trace-id')}")

    # 2. Streaming, with usage in the last event.
    print("stream: ", end="")
    for event in client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if event.choices and event.choices[0].delta.content:
            print(event.choices[0].delta.content, end="", flush=True)
        if event.usage:
            print(f"\nstream usage: {event.usage.completion_tokens} output tokens")

    # 3. Errors arrive as the client's usual exceptions.
    try:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    except openai.NotFoundError as exc:
        print(f"unknown model -> HTTP {exc.status_code}: {exc.code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
