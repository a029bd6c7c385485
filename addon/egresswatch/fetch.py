"""Fetch one upstream list over HTTP(S) with a deadline, a size limit and retries.

Used by ``egresswatch lists update``; the standard library only (``urllib``):

- ``timeout`` bounds every socket operation and the whole transfer of one attempt;
- ``max_bytes`` is enforced while the body streams in (a ``Content-Length`` above the limit is
  refused before reading), so an oversized list never sits in memory whole;
- transient failures (connection refused or reset, timeouts, HTTP 408, 429, 500, 502, 503, 504)
  are retried ``retries`` times with exponential backoff (``backoff``, ``2 * backoff``, ...);
  other HTTP errors (404, 403...) are not;
- redirects are followed only to ``http`` and ``https`` URLs (at most five);
- only ``http://`` and ``https://`` URLs are fetched at all.

Errors::

    FetchError(Exception)   .url, .attempts; str() says why the last attempt failed
"""

from __future__ import annotations

import hashlib
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from http.client import HTTPMessage
from typing import IO
from urllib.parse import urlsplit

from . import __version__

__all__ = ["FetchError", "Fetched", "fetch"]

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CHUNK = 64 * 1024
_MAX_REDIRECTS = 5


class FetchError(Exception):
    """The URL could not be fetched (after ``attempts`` tries)."""

    def __init__(self, url: str, reason: str, attempts: int = 1) -> None:
        self.url = url
        self.attempts = attempts
        super().__init__(reason)


class _Transient(Exception):
    """An attempt failed in a way worth retrying."""


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str  # as requested
    final_url: str  # after redirects
    body: bytes
    sha256: str
    fetched_at: datetime  # UTC
    attempts: int


class _Redirects(urllib.request.HTTPRedirectHandler):
    max_redirections = _MAX_REDIRECTS

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise urllib.error.HTTPError(
                newurl, code, f"redirect to a {scheme or 'relative'}: URL refused", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be fetched, or ``None``."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return "only http:// and https:// URLs are fetched"
    if not parts.hostname:
        return "the URL has no host"
    return None


def _attempt(url: str, timeout: float, max_bytes: int) -> tuple[bytes, str]:
    opener = urllib.request.build_opener(_Redirects)
    req = urllib.request.Request(url, headers={"User-Agent": f"egresswatch/{__version__}"})
    deadline = time.monotonic() + timeout
    try:
        with opener.open(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise FetchError(url, f"the body is {length} bytes, over the limit of {max_bytes}")
            chunks: list[bytes] = []
            total = 0
            while True:
                if time.monotonic() > deadline:
                    raise _Transient(f"timed out after {timeout:g} s")
                chunk = resp.read1(_CHUNK)  # one receive: a trickling server meets the deadline
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise FetchError(url, f"the body exceeds the limit of {max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks), resp.geturl()
    except urllib.error.HTTPError as e:
        e.close()  # the error holds the response and its socket
        reason = f"HTTP {e.code} {e.reason}"
        if e.code in _TRANSIENT_STATUS:
            raise _Transient(reason) from e
        raise FetchError(url, reason) from e
    except urllib.error.URLError as e:
        inner = e.reason
        if isinstance(inner, TimeoutError):
            raise _Transient(f"timed out after {timeout:g} s") from e
        if isinstance(inner, OSError):
            raise _Transient(f"cannot connect: {inner.strerror or inner}") from e
        raise FetchError(url, f"cannot fetch: {inner}") from e
    except TimeoutError as e:
        raise _Transient(f"timed out after {timeout:g} s") from e
    except (ConnectionError, OSError, http.client.HTTPException) as e:
        raise _Transient(f"connection failed: {e!r}") from e


def fetch(
    url: str,
    *,
    timeout: float = 30.0,
    max_bytes: int = 20 * 1024 * 1024,
    retries: int = 2,
    backoff: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Fetched:
    """Fetch ``url``; raise :class:`FetchError` when it cannot be fetched within the limits."""
    why = check_url(url)
    if why is not None:
        raise FetchError(url, why, 0)
    attempts = 0
    while True:
        attempts += 1
        try:
            body, final = _attempt(url, timeout, max_bytes)
        except FetchError as e:
            e.attempts = attempts
            raise
        except _Transient as e:
            if attempts > retries:
                raise FetchError(url, str(e), attempts) from e
            sleep(backoff * 2 ** (attempts - 1))
            continue
        return Fetched(
            url=url,
            final_url=final,
            body=body,
            sha256=hashlib.sha256(body).hexdigest(),
            fetched_at=datetime.now(UTC),
            attempts=attempts,
        )
