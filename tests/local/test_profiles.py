"""Serving profiles against the real engine: n-gram speculation never changes a greedy
answer, prefix caching is on by default (and reported), and off when the profile says so.

Each profiled server (SmolLM2, ~40-90 s to start, ~3.8 GB) is started once for this module
and stopped after it; the default-profile server is the session's ``vllm_url``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flowopt.errors import ConfigError
from flowopt.local.models import resolve_model
from flowopt.local.profiles import PROFILES, get_profile
from flowopt.local.server import LocalServer, ServerConfig

PROMPTS = (
    # extractive: the answer copies the prompt, where n-gram lookup guesses right
    "Repeat this sentence exactly: The quick brown fox jumps over the lazy dog near the river.",
    "Copy the list: apples, pears, plums, cherries, grapes, melons, lemons, limes.",
    # free text: few guesses are accepted
    "Write one sentence about the sea.",
    "What is the capital of France?",
    "Name three colours.",
)
LONG_SYSTEM = "You are a support assistant for an online shop. " * 40  # ~400 tokens, static


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(profile: str, home: Path) -> Iterator[str]:
    port = _free_port()
    server = LocalServer(port, home=home)
    state = server.start(
        ServerConfig(
            model=str(resolve_model("smollm2")),
            port=port,
            served_name="smollm2",
            settings_from="smollm2",
            profile=profile,
        ),
        timeout=float(os.environ.get("FLOWOPT_TEST_VLLM_TIMEOUT", "600")),
    )
    try:
        yield state.base_url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ngram_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _start("ngram", tmp_path_factory.mktemp("ngram-home"))


@pytest.fixture(scope="module")
def no_prefix_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _start("no-prefix-cache", tmp_path_factory.mktemp("noprefix-home"))


def _chat(base_url: str, messages: list[dict[str, str]], max_tokens: int = 32) -> dict:  # type: ignore[type-arg]
    resp = httpx.post(
        f"{base_url}/v1/chat/completions",
        json={
            "model": "smollm2",
            "messages": messages,
            "temperature": 0,
            "max_tokens": max_tokens,
        },
        timeout=120,
    )
    resp.raise_for_status()
    return resp.json()  # type: ignore[no-any-return]


def test_profiles_are_named_flag_sets() -> None:
    assert set(PROFILES) == {"default", "no-prefix-cache", "ngram"}
    assert "--no-enable-prefix-caching" in get_profile("no-prefix-cache").args()
    assert "--speculative-config" in get_profile("ngram").args()
    for p in PROFILES.values():  # every profile reports cached prompt tokens
        assert "--enable-prompt-tokens-details" in p.args()
    with pytest.raises(ConfigError, match="did you mean 'ngram'"):
        get_profile("ngarm")
    argv = ServerConfig(model="smollm2", profile="ngram").argv(Path("/m"))
    assert argv[argv.index("--speculative-config") + 1].startswith('{"method":"ngram"')


def test_ngram_speculation_never_changes_a_greedy_answer(vllm_url: str, ngram_url: str) -> None:
    for prompt in PROMPTS:
        msgs = [{"role": "user", "content": prompt}]
        plain = _chat(vllm_url, msgs)["choices"][0]["message"]["content"]
        speculated = _chat(ngram_url, msgs)["choices"][0]["message"]["content"]
        assert speculated == plain, prompt


def test_prefix_cache_hits_are_reported_and_the_off_profile_has_none(
    ngram_url: str, no_prefix_url: str
) -> None:
    msgs = [{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": "Hi"}]
    for url, expect_hit in ((ngram_url, True), (no_prefix_url, False)):
        _chat(url, msgs, max_tokens=2)
        again = _chat(url, msgs, max_tokens=2)["usage"]
        cached = (again.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        assert (cached > 0) is expect_hit, (url, again)
        if expect_hit:  # the shared system prompt (~400 tokens) came from the cache
            assert cached >= 0.8 * again["prompt_tokens"] - 32
