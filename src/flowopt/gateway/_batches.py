"""OpenAI's Files and Batches API on the gateway: ``/v1/files`` and ``/v1/batches``.

What the official client calls (``client.files.create(file=..., purpose="batch")``,
``client.files.retrieve/list/delete/content``,
``client.batches.create/retrieve/cancel/list``), answered in the shapes it parses. Files
and jobs live in the batch store (``gateway.batch.store``) and belong to the tenant that
made them: another key sees a 404. A background task in each gateway process works on
open jobs (:class:`~flowopt.batch.worker.BatchWorker`), so a job created on one worker of
``--workers N``, or left half done by a restart, is finished by whichever process is up.

Why the multipart body is parsed with the standard library's ``email`` parser: an upload
is one form with two fields, and the parser handles MIME boundaries correctly; the usual
choice (``python-multipart``) would be a new dependency for one route.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from email import policy
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any

from starlette.requests import Request as HTTPRequest
from starlette.responses import Response as HTTPResponse
from starlette.routing import Route

from flowopt.batch._execute import LineExecutor
from flowopt.batch.store import JobStore, open_store
from flowopt.batch.worker import BatchWorker
from flowopt.gateway._body import clip, read_body, read_json
from flowopt.gateway._wire import dumps
from flowopt.gateway.errors import HTTPProblem, problem_from

if TYPE_CHECKING:
    from flowopt.gateway.app import Gateway

__all__ = ["Batches"]

_log = logging.getLogger("flowopt.gateway")
_JSON = "application/json"
_POLL_S = 5.0  # how often a gateway looks for jobs another process created or left


def _not_found(what: str, ident: str) -> HTTPProblem:
    return HTTPProblem(404, f"no {what} {clip(ident, 80)}", code="not_found", param=None)


def _limit(raw: str | None, most: int) -> int:
    """A list's ``limit``: 1 to ``most`` (OpenAI's range), ``most`` when not given."""
    if raw is None:
        return most
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= most:
        raise HTTPProblem(400, f"limit must be an integer from 1 to {most}", param="limit")
    return int(raw)


def _page(found: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """OpenAI's cursor page over ``found`` (fetched with ``limit + 1`` to see if more)."""
    page = found[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(found) > limit,
    }


def _multipart(content_type: str, raw: bytes) -> tuple[str | None, str, bytes]:
    """``purpose``, the file's name and its bytes from a ``multipart/form-data`` body."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise HTTPProblem(
            415,
            "upload the file as multipart/form-data (fields 'file' and 'purpose')",
            code="unsupported_media_type",
            param="Content-Type",
        )
    msg = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
    )
    purpose: str | None = None
    file: tuple[str, bytes] | None = None
    for part in msg.iter_parts() if msg.is_multipart() else ():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if name == "purpose":
            purpose = data.decode("utf-8", "replace").strip()
        elif name == "file":
            file = (part.get_filename() or "upload.jsonl", data)
    if file is None:
        raise HTTPProblem(400, "the form has no 'file' field", param="file")
    return purpose, file[0], file[1]


class Batches:
    """The routes and the background worker of one gateway process."""

    def __init__(self, gw: Gateway) -> None:
        self._gw = gw
        self.settings = gw.settings.batch
        self._store: JobStore | None = None
        self._opening: asyncio.Lock | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.worker: BatchWorker | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/v1/files", self.create_file, methods=["POST"]),
            Route("/v1/files", self.list_files, methods=["GET"]),
            Route("/v1/files/{file_id}", self.get_file, methods=["GET"]),
            Route("/v1/files/{file_id}", self.delete_file, methods=["DELETE"]),
            Route("/v1/files/{file_id}/content", self.file_content, methods=["GET"]),
            Route("/v1/batches", self.create_batch, methods=["POST"]),
            Route("/v1/batches", self.list_batches, methods=["GET"]),
            Route("/v1/batches/{batch_id}", self.get_batch, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", self.cancel_batch, methods=["POST"]),
        ]

    # -- lifecycle --------------------------------------------------------------------------
    def _store_exists(self) -> bool:
        where = self.settings.store
        if "://" in where and not where.startswith("sqlite:///"):
            return True  # a database: there may be jobs in it
        return os.path.exists(os.path.expanduser(where.removeprefix("sqlite:///")))

    async def store(self) -> JobStore:
        """The job store, opened on first use (a gateway that never sees a batch never
        creates a file)."""
        if self._store is not None:
            return self._store
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._store is None:
                store = await asyncio.to_thread(open_store, self.settings.store)
                self.worker = BatchWorker(
                    store, LineExecutor(self._gw, self.settings.priority), self.settings
                )
                self._store = store
        return self._store

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.worker is not None:
            with contextlib.suppress(Exception):
                await self.worker.stop()
        if self._store is not None:
            self._store.close()

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                if self._store is not None or self._store_exists():
                    await self.store()
                    assert self.worker is not None
                    await self.worker.run_open_jobs()
            except Exception as exc:  # the store is down: try again on the next round
                _log.error("batch worker round failed: %s", type(exc).__name__, exc_info=exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_POLL_S):
                    await self._wake.wait()

    # -- routes -----------------------------------------------------------------------------
    async def _guarded(self, request: HTTPRequest, fn: Any) -> HTTPResponse:
        try:
            tenant = self._gw.keys.tenant_for(request.headers.get("authorization"))
            result = await fn(tenant, await self.store())
            if isinstance(result, HTTPResponse):
                return result
            return HTTPResponse(dumps(result), media_type=_JSON)
        except Exception as exc:
            problem = problem_from(exc)
            if problem.status >= 500:
                _log.error("batch route failed: %s", type(exc).__name__, exc_info=exc)
            return HTTPResponse(
                dumps(problem.body()),
                status_code=problem.status,
                media_type=_JSON,
                headers=problem.headers,
            )

    async def create_file(self, request: HTTPRequest) -> HTTPResponse:
        async def go(tenant: str | None, store: JobStore) -> Any:
            raw = await read_body(
                request.receive, request.headers.get("content-length"), self.settings.max_file_bytes
            )
            purpose, name, data = _multipart(request.headers.get("content-type", ""), raw)
            if purpose != "batch":
                raise HTTPProblem(
                    400,
                    f"purpose must be 'batch' (this server keeps batch input files only), "
                    f"got {clip(purpose, 40)}",
                    param="purpose",
                )
            return await asyncio.to_thread(
                store.put_file, data, filename=name[:200], purpose="batch", tenant=tenant
            )

        return await self._guarded(request, go)

    async def get_file(self, request: HTTPRequest) -> HTTPResponse:
        fid = request.path_params["file_id"]

        async def go(tenant: str | None, store: JobStore) -> Any:
            info = await asyncio.to_thread(store.file_info, fid, tenant)
            if info is None:
                raise _not_found("file", fid)
            return info

        return await self._guarded(request, go)

    async def list_files(self, request: HTTPRequest) -> HTTPResponse:
        q = request.query_params
        purpose, after, order = q.get("purpose"), q.get("after") or None, q.get("order", "desc")

        async def go(tenant: str | None, store: JobStore) -> Any:
            limit = _limit(q.get("limit"), 10_000)
            if order not in ("asc", "desc"):
                raise HTTPProblem(400, "order must be 'asc' or 'desc'", param="order")
            found = await asyncio.to_thread(
                lambda: store.files(
                    tenant,
                    purpose=purpose,
                    after=after,
                    limit=limit + 1,
                    ascending=order == "asc",
                )
            )
            return _page(found, limit)

        return await self._guarded(request, go)

    async def delete_file(self, request: HTTPRequest) -> HTTPResponse:
        fid = request.path_params["file_id"]

        async def go(tenant: str | None, store: JobStore) -> Any:
            if not await asyncio.to_thread(store.delete_file, fid, tenant):
                raise _not_found("file", fid)
            return {"id": fid, "object": "file", "deleted": True}

        return await self._guarded(request, go)

    async def file_content(self, request: HTTPRequest) -> HTTPResponse:
        fid = request.path_params["file_id"]

        async def go(tenant: str | None, store: JobStore) -> Any:
            data = await asyncio.to_thread(store.file_content, fid, tenant)
            if data is None:
                raise _not_found("file", fid)
            return HTTPResponse(data, media_type="application/octet-stream")

        return await self._guarded(request, go)

    async def create_batch(self, request: HTTPRequest) -> HTTPResponse:
        async def go(tenant: str | None, store: JobStore) -> Any:
            body = await read_json(request, self._gw.settings.max_body_bytes, 30.0)
            if not isinstance(body, dict):
                raise HTTPProblem(400, "the request body must be a JSON object")
            fields = {}
            for key in ("input_file_id", "endpoint"):
                if not isinstance(body.get(key), str):
                    raise HTTPProblem(400, f"'{key}' must be a string", param=key)
                fields[key] = body[key]
            window = body.get("completion_window", "24h")
            metadata = body.get("metadata")
            if not isinstance(window, str):
                raise HTTPProblem(400, "'completion_window' must be a string like '24h'")
            if metadata is not None and not (
                isinstance(metadata, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
            ):
                raise HTTPProblem(400, "'metadata' must map strings to strings", param="metadata")
            job = await asyncio.to_thread(
                lambda: store.create_job(
                    input_file_id=fields["input_file_id"],
                    endpoint=fields["endpoint"],
                    completion_window=window,
                    metadata=metadata,
                    tenant=tenant,
                )
            )
            if self._wake is not None:
                self._wake.set()
            return job

        return await self._guarded(request, go)

    async def get_batch(self, request: HTTPRequest) -> HTTPResponse:
        bid = request.path_params["batch_id"]

        async def go(tenant: str | None, store: JobStore) -> Any:
            job = await asyncio.to_thread(store.job, bid, tenant)
            if job is None:
                raise _not_found("batch", bid)
            return job

        return await self._guarded(request, go)

    async def cancel_batch(self, request: HTTPRequest) -> HTTPResponse:
        bid = request.path_params["batch_id"]

        async def go(tenant: str | None, store: JobStore) -> Any:
            job = await asyncio.to_thread(store.cancel, bid, tenant)
            if job is None:
                raise _not_found("batch", bid)
            return job

        return await self._guarded(request, go)

    async def list_batches(self, request: HTTPRequest) -> HTTPResponse:
        after = request.query_params.get("after") or None
        try:
            limit = min(max(int(request.query_params.get("limit", "20")), 1), 100)
        except ValueError:
            limit = 20

        async def go(tenant: str | None, store: JobStore) -> Any:
            jobs = await asyncio.to_thread(lambda: store.jobs(tenant, after=after, limit=limit + 1))
            return _page(jobs, limit)

        return await self._guarded(request, go)
