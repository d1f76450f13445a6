"""How an engine URL is reached: the proxy the environment names for it, the CA bundle its
TLS certificate is checked against, and what a failed TLS handshake means.

Why one place: the three HTTP clients differ by default. httpx honours ``HTTP(S)_PROXY``
/ ``NO_PROXY`` and verifies with certifi's bundle; aiohttp (as flowopt configures it) and
the native client read no proxy variables and verify with the system's store. The
backend decides here, once, and gives every client the same answer:

- ``http: auto`` picks httpx when the environment names a proxy for a backend URL that is
  not loopback (a remote engine behind a corporate proxy works as curl would reach it);
  a loopback engine keeps the fast client, which is where a proxy set for the rest of the
  machine is never meant to apply. ``http: native`` or ``aiohttp`` named explicitly with a
  proxy in force logs a warning, since they will connect directly.
- ``ca_file`` (a PEM bundle) builds one ``ssl.SSLContext`` that all three clients use, for
  an engine whose certificate a private CA signed.
- A handshake that fails says why (not trusted, wrong host name, not TLS) and how to fix
  it, instead of the "is the server running?" of a refused connection.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from flowopt.errors import ConfigError

__all__ = ["proxied", "tls_context", "tls_failure", "warn_if_proxy_ignored"]

_log = logging.getLogger("flowopt.backends")


def _loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def proxied(urls: Iterable[str]) -> list[str]:
    """The non-loopback URLs among ``urls`` for which the environment names a proxy
    (``HTTP_PROXY`` for http://, ``HTTPS_PROXY`` for https://, ``ALL_PROXY``), after
    ``NO_PROXY``: the same variables httpx, requests and curl read."""
    proxies = urllib.request.getproxies()
    if not proxies:
        return []
    out: list[str] = []
    for url in urls:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if not host or _loopback(host):
            continue
        if parts.scheme not in proxies and "all" not in proxies:
            continue
        netloc = f"{host}:{parts.port}" if parts.port else host
        if urllib.request.proxy_bypass(netloc) or urllib.request.proxy_bypass(host):
            continue
        out.append(url)
    return out


def warn_if_proxy_ignored(kind: str, urls: Iterable[str]) -> None:
    """Log once per client built: ``kind`` (native or aiohttp) connects directly although
    the environment names a proxy for these URLs."""
    skipped = proxied(urls)
    if skipped:
        _log.warning(
            "http: %s connects directly to %s although the environment sets a proxy for it;"
            " use http: auto or httpx to go through the proxy, or add the host to NO_PROXY"
            " to silence this",
            kind,
            ", ".join(skipped),
        )


def tls_context(ca_file: str | None) -> ssl.SSLContext | None:
    """The verifying context for ``ca_file`` (None: each client's default store). Checked
    when the backend is built, so a wrong path fails at start-up, not at the first call."""
    if ca_file is None:
        return None
    path = Path(ca_file).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"ca_file {ca_file!r} is not a file",
            hint="give the path of a PEM bundle holding the CA that signed the engine's"
            " certificate",
        )
    try:
        return ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"ca_file {ca_file!r} holds no usable PEM certificate ({exc.reason or exc})",
            hint="the file must hold one or more '-----BEGIN CERTIFICATE-----' blocks",
        ) from None


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    # The innermost one: aiohttp's wrapper is itself an ``ssl.SSLError`` subclass but
    # carries neither ``reason`` nor ``verify_message``; the error it wraps does.
    seen: set[int] = set()
    found: ssl.SSLError | None = None
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLError):
            found = cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return found


def tls_failure(exc: BaseException) -> tuple[str, str] | None:
    """(what failed, how to fix it) when ``exc`` is a failed TLS handshake, else None.

    Reads the ``ssl`` error in the exception's chain (aiohttp and httpx wrap it); the
    message text is the fallback for a wrapper that dropped the chain."""
    cause = _ssl_cause(exc)
    text = str(exc)
    if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        why = getattr(cause, "verify_message", None) or "certificate verify failed"
        if "hostname" in why.lower() or "ip address mismatch" in why.lower():
            return (
                f"TLS certificate does not match the host ({why})",
                "use the host name the certificate was issued for in base_url",
            )
        return (
            f"TLS certificate not trusted ({why})",
            "set ca_file: <PEM bundle of the CA that signed it> in the backend's options"
            " (or SSL_CERT_FILE for the whole process)",
        )
    if cause is not None:
        return (
            f"TLS handshake failed ({cause.reason or cause})",
            "is the server speaking TLS on this port? use http:// for a plain HTTP server",
        )
    return None
