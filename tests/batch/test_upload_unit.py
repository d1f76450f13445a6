"""The multipart upload of ``POST /v1/files``, parsed with the standard library: the
file's bytes come back exactly (non-ASCII, CRLF), whatever content type the client gave."""

from __future__ import annotations

import httpx
import pytest

from flowopt.gateway._batches import _multipart
from flowopt.gateway.errors import HTTPProblem

DATA = '{"a": "héllo ✓"}\r\n{"b": 2}\n'.encode()


@pytest.mark.parametrize("ctype", ["text/plain", "application/octet-stream", "application/jsonl"])
def test_upload_bytes_come_back_exactly(ctype: str) -> None:
    req = httpx.Request(
        "POST", "http://x", files={"file": ("in.jsonl", DATA, ctype)}, data={"purpose": "batch"}
    )
    assert _multipart(req.headers["content-type"], req.read()) == ("batch", "in.jsonl", DATA)


def test_a_form_without_a_file_or_not_multipart_is_refused() -> None:
    req = httpx.Request("POST", "http://x", files={"other": ("x", b"1")}, data={"purpose": "batch"})
    with pytest.raises(HTTPProblem) as exc:
        _multipart(req.headers["content-type"], req.read())
    assert (exc.value.status, exc.value.param) == (400, "file")
    with pytest.raises(HTTPProblem) as exc:
        _multipart("application/json", b"{}")
    assert exc.value.status == 415
