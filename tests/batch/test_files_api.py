"""``/v1/files`` list and delete through ``flowopt serve``'s app, with the official
``openai`` client: pages, order, purpose filter, tenants, a deleted file's 404s. The
routes touch only the batch store (sqlite here), so the pipeline's backend is never
called; the batch run end to end against a real model is in test_batch_live.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from flowopt import pipeline
from flowopt.gateway._background import BackgroundServer
from flowopt.gateway.app import create_app
from flowopt.spec import BatchSettings, GatewaySpec

KEYS = {"acme": "sk-files-acme-0123", "globex": "sk-files-globex-0123"}


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    pipe = pipeline(
        "files",
        backend={"vllm": {"base_url": "http://127.0.0.1:9", "model": "never-called"}},
        steps=[{"name": "answer", "prompt": "{input}"}],
    )
    settings = GatewaySpec(
        api_keys={t: k for t, k in KEYS.items()},  # type: ignore[misc]
        batch=BatchSettings(store=str(tmp_path / "jobs.sqlite")),
    )
    with BackgroundServer(create_app(pipe, settings)) as server:
        yield server.base_url + "/v1"


def _client(base: str, tenant: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base, api_key=KEYS[tenant], max_retries=0)


def test_the_openai_client_lists_and_deletes_files(gateway: str) -> None:
    acme, globex = _client(gateway, "acme"), _client(gateway, "globex")
    made = [
        acme.files.create(file=(f"q{i}.jsonl", b'{"custom_id": "a"}\n'), purpose="batch").id
        for i in range(3)
    ]
    theirs = globex.files.create(file=("g.jsonl", b"{}\n"), purpose="batch").id

    listed = [f.id for f in acme.files.list()]
    assert sorted(listed) == sorted(made) and theirs not in listed
    first = acme.files.list(limit=2)
    assert len(first.data) == 2 and first.has_more
    # the client's auto-pagination follows `after` through every page
    assert [f.id for f in acme.files.list(limit=2)] == listed
    assert [f.id for f in acme.files.list(order="asc")] == listed[::-1]
    assert list(acme.files.list(purpose="batch_output")) == []

    # another tenant's file is not there for this key, to read or to delete
    with pytest.raises(openai.NotFoundError):
        acme.files.delete(theirs)
    assert globex.files.retrieve(theirs).id == theirs

    gone = acme.files.delete(made[0])
    assert gone.id == made[0] and gone.deleted and gone.object == "file"
    with pytest.raises(openai.NotFoundError):
        acme.files.retrieve(made[0])
    with pytest.raises(openai.NotFoundError):
        acme.files.content(made[0])
    with pytest.raises(openai.NotFoundError):
        acme.files.delete(made[0])
    assert sorted(f.id for f in acme.files.list()) == sorted(made[1:])

    with pytest.raises(openai.BadRequestError, match="limit"):
        acme.files.list(limit=0)
    with pytest.raises(openai.BadRequestError, match="limit"):
        acme.files.list(extra_query={"limit": "\u00b2"})  # a digit, not an ASCII one
    with pytest.raises(openai.BadRequestError, match="after"):
        acme.files.list(after=made[0])  # deleted: not an empty last page
    with pytest.raises(openai.BadRequestError, match="order"):
        acme.files.list(extra_query={"order": "sideways"})
