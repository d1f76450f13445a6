"""Use a third-party middleware by name: the ``redact`` plugin in front of a local vLLM.

    pip install -e plugins/flowopt-redact --no-deps -c constraints.txt
    flowopt backend up                      # or point FLOWOPT_BASE_URL at a running server
    FLOWOPT_BASE_URL=http://127.0.0.1:8000 python examples/plugin_redact.py

Nothing here imports the plugin: ``"redact"`` is resolved through the ``flowopt.middleware``
entry points when the pipeline is built, exactly as it would be from a YAML spec. The
script prints the decision the plugin recorded (counts only), then streams a second answer
to show that a streamed request is redacted the same way.
"""

from __future__ import annotations

import os
import sys

from flowopt import ConfigError, Request, Result, TokenEvent, pipeline, registry

BASE_URL = os.environ.get("FLOWOPT_BASE_URL", "http://127.0.0.1:8000")
MODEL = os.environ.get("FLOWOPT_MODEL", "smollm2")

QUESTION = (
    "Hi, I'm Jane (jane.doe@example.com, +44 20 7946 0958). "
    "My order #12345 from 2024-01-15 has not arrived. What should I do?"
)


def main() -> int:
    try:
        entry = registry.middleware.get("redact")
    except ConfigError as exc:
        print(f"{exc}\n\ninstall the plugin first: pip install -e plugins/flowopt-redact --no-deps")
        return 2
    print(f"middleware 'redact' comes from {entry.distribution} ({entry.value})")

    pipe = pipeline(
        "redacted-support",
        backend={"vllm": {"base_url": BASE_URL, "model": MODEL}},
        # Outermost first: redact before anything else sees the prompt.
        middleware=[{"redact": ["email", "phone"]}, "logging"],
        defaults={"temperature": 0, "max_tokens": 48},
        steps=[
            {
                "name": "answer",
                "system": "You are a support agent. Answer in two sentences.",
                "prompt": "{input}",
            }
        ],
    )
    print("\nspec, as YAML:\n" + pipe.to_yaml())

    # What the backend will receive for this input: the plugin's own helper, no server call.
    # (The pipeline types its middleware as the bare protocol, hence the getattr.)
    redact_request = getattr(dict(pipe.middleware)["redact"], "redact_request")  # noqa: B009
    sent, _ = redact_request(Request.chat(QUESTION))
    print(f"the server will see: {sent.messages[0].content}\n")

    try:
        result = pipe.invoke(QUESTION, user="jane")
        print(f"answer: {result.text.strip()}")
        for d in result.decisions:
            print(f"decision: {d.to_dict()}")

        print("\nstreamed: ", end="", flush=True)
        for event in pipe.stream(QUESTION, user="jane"):
            if isinstance(event, TokenEvent):
                print(event.text, end="", flush=True)
            elif isinstance(event, Result):
                actions = [f"{d.middleware}:{d.action}" for d in event.decisions]
                print(f"\ndecisions on the streamed run: {actions}")
    finally:
        pipe.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
