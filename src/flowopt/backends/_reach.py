"""How an engine URL is reached: the proxy the environment names for it, the CA bundle its
TLS certificate is checked against, and what a failed TLS handshake means.

Why one place: the three HTTP clients differ by default. httpx honours ``HTTP(S)_PROXY``
/ ``ALL_PROXY`` / ``NO_PROXY``; aiohttp (as flowopt configures it) and the native client
read no proxy variables. The backend decides here, once, and gives every client the same
answer:

- ``http: auto`` picks httpx when the environment names a proxy httpx can use (http,
  https; SOCKS5 with ``socksio``) for a backend URL that is not this machine (a remote
  engine behind a corporate proxy is reached as curl would); an engine on this machine
  keeps the fast client, since a proxy set for the rest of the machine is never meant for
  it. A proxy httpx cannot use, or ``http: native``/``aiohttp`` named explicitly with a
  proxy in force, logs a warning and connects directly.
- Every client verifies against the same store: the system's (``SSL_CERT_FILE`` is read),
  or the one ``ca_file`` (a PEM bundle) builds, for an engine a private CA signed; so a
  switch to httpx for a proxy does not change which certificates are trusted.
- A handshake that fails says why (not trusted, wrong host name, not TLS, refused) and
  how to fix it, instead of the "is the server running?" of a refused connection.

On macOS and Windows ``urllib``'s proxy lookup also reads the system's proxy settings.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import socket
import ssl
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from flowopt.errors import ConfigError

__all__ = ["choose", "proxy_for", "shown_proxy", "tls_context", "tls_failure"]

_log = logging.getLogger("flowopt.backends")


def _loopback(host: str) -> bool:
    """This machine: ``localhost`` names, loopback and unspecified addresses (``0.0.0.0``,
    the address vLLM prints at start-up), IPv4-mapped and short forms (``127.1``)."""
    name = host.lower().strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        try:  # inet_aton reads the short and octal forms a URL may carry ("127.1")
            ip = ipaddress.ip_address(socket.inet_aton(name))
        except OSError:
            return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or ip.is_unspecified or bool(mapped and mapped.is_loopback)


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTP_PROXY`` for http://,
    ``HTTPS_PROXY`` for https://, else ``ALL_PROXY``; upper or lower case), after
    ``NO_PROXY``: the variables httpx, requests and curl read (CIDR ranges in ``NO_PROXY``
    are not read, as httpx does not). None for loopback hosts: a proxy set for the rest of
    the machine is never meant for an engine on it."""
    proxies = urllib.request.getproxies()
    if not proxies:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host or _loopback(host):
        return None
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy:
        return None
    netloc = f"{host}:{parts.port}" if parts.port else host
    if urllib.request.proxy_bypass(netloc) or urllib.request.proxy_bypass(host):
        return None
    return proxy


def shown_proxy(proxy: str) -> str:
    """``proxy`` fit for a log or an error: a user name and password in it (a proxy URL
    often carries them) are replaced by ``***``."""
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.username is None and parts.password is None:
        return proxy
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def _usable(proxy: str) -> bool:
    """Whether httpx can go through ``proxy``: http(s) always, SOCKS5 with ``socksio``."""
    scheme = urlsplit(proxy if "://" in proxy else f"http://{proxy}").scheme.lower()
    if scheme in ("http", "https"):
        return True
    if scheme in ("socks5", "socks5h"):
        return importlib.util.find_spec("socksio") is not None
    return False


def choose(http: str, urls: Sequence[str]) -> str:
    """The client to build for ``urls``: ``http`` as chosen, except that ``auto`` becomes
    ``httpx`` when the environment names a proxy it can use for one of them; logs which
    proxy, and warns where one is named but will not be used (an explicit direct client,
    or a proxy scheme httpx cannot speak)."""
    routes = [(u, p) for u in urls if (p := proxy_for(u)) is not None]
    if not routes:
        return http
    shown = ", ".join(f"{u} -> {shown_proxy(p)}" for u, p in routes)
    if http == "httpx":
        return http
    if http != "auto":
        _log.warning(
            "http: %s connects directly although the environment sets a proxy (%s);"
            " use http: auto or httpx to go through it, or add the host to NO_PROXY"
            " to silence this",
            http,
            shown,
        )
        return http
    bad = [p for _, p in routes if not _usable(p)]
    if bad:
        _log.warning(
            "the environment sets a proxy flowopt cannot use (%s): connecting directly;"
            " http(s) proxies work, SOCKS5 with the socksio package",
            ", ".join(sorted({shown_proxy(p) for p in bad})),
        )
        return http
    _log.info("the backend goes through the environment's proxy (%s) with httpx", shown)
    return "httpx"


def tls_context(ca_file: str | None) -> ssl.SSLContext | None:
    """The verifying context for ``ca_file`` (None: the clients use the system's). Checked
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
        reason = str(cause.reason or cause)
        plain = any(m in reason.upper() for m in _NOT_TLS)
        return (
            f"TLS handshake failed ({reason})",
            "the server does not speak TLS on this port: use http:// for a plain HTTP server"
            if plain
            else "the server refused the handshake: does it want a client certificate or a"
            " TLS version this Python lacks? `openssl s_client -connect HOST:PORT` shows why",
        )
    return None


# What OpenSSL reports when the other end answered a ClientHello in plain HTTP.
_NOT_TLS = (
    "WRONG_VERSION_NUMBER",
    "PACKET_LENGTH_TOO_LONG",
    "HTTP_REQUEST",
    "RECORD_LAYER_FAILURE",
)
