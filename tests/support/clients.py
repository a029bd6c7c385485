"""Small raw clients for the e2e tests: bytes on a socket, so hostile input reaches the proxy as is.

``http_via_proxy`` (absolute-form request with any Host header), ``connect`` (CONNECT with any
target), ``socks5_connect`` (SOCKS5 with any name bytes), ``tls_through`` (a ClientHello with any
SNI inside a tunnel), ``curl`` (the real curl), ``websocket_via_proxy`` (the ``websockets``
sans-I/O client speaking through an absolute-form upgrade).
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
from dataclasses import dataclass


@dataclass
class RawResponse:
    status: int | None
    head: bytes
    body: bytes


def read_http_response(sock: socket.socket, limit: int = 1 << 20) -> RawResponse:
    """Read one HTTP/1 response (status line, headers, Content-Length body); status None on EOF."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return RawResponse(None, buf, b"")
        buf += chunk
        if len(buf) > limit:
            raise ValueError("response head too large")
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return RawResponse(status, head, rest[:length])


def header(resp: RawResponse, name: str) -> str | None:
    for line in resp.head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name.lower().encode():
            return v.strip().decode("latin-1")
    return None


def http_via_proxy(
    port: int,
    url: bytes,
    host: bytes | None,
    *,
    extra: bytes = b"",
    timeout: float = 10,
) -> RawResponse:
    """``GET <url>`` in absolute form to the proxy with ``Host: <host>`` (None: no Host header)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        req = b"GET " + url + b" HTTP/1.1\r\n"
        if host is not None:
            req += b"Host: " + host + b"\r\n"
        req += extra + b"Connection: close\r\n\r\n"
        s.sendall(req)
        return read_http_response(s)


def connect(port: int, target: bytes, timeout: float = 10) -> tuple[socket.socket, RawResponse]:
    """Send ``CONNECT <target> HTTP/1.1`` and read the proxy's answer; the socket stays open."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n")
        return s, read_http_response(s)
    except BaseException:
        s.close()
        raise


def socks5_connect(
    port: int, name: bytes, dport: int = 443, timeout: float = 10
) -> tuple[socket.socket, int | None]:
    """SOCKS5 CONNECT by domain name; return the socket and the reply code (None: closed)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"\x05\x01\x00")
        if s.recv(2) != b"\x05\x00":
            return s, None
        s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", dport))
        reply = s.recv(262)
        return s, (reply[1] if len(reply) >= 2 else None)
    except BaseException:
        s.close()
        raise


def tls_through(
    sock: socket.socket, sni: str | None, cafile: str | None = None, timeout: float = 10
) -> ssl.SSLSocket:
    """Start TLS on an open tunnel with ``sni`` (None: no SNI extension)."""
    if cafile is not None:
        ctx = ssl.create_default_context(cafile=cafile)
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if sni is None:
        ctx.check_hostname = False
    sock.settimeout(timeout)
    return ctx.wrap_socket(sock, server_hostname=sni)


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run curl (no config file, no proxy from the environment) and capture its output."""
    return subprocess.run(
        ["curl", "-q", "-sS", "--noproxy", "", "--max-time", "15", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
    )


def websocket_via_proxy(port: int, uri: str, message: str, timeout: float = 10) -> tuple[int, str]:
    """Open ``uri`` (ws://) through the proxy with an absolute-form upgrade request, send
    ``message`` and return (handshake status, echoed text)."""
    from websockets.client import ClientProtocol
    from websockets.frames import Opcode
    from websockets.http11 import Response
    from websockets.uri import parse_uri

    proto = ClientProtocol(parse_uri(uri))
    request = proto.connect()
    request.path = uri.replace("ws://", "http://", 1)  # absolute form: this is a proxy request
    proto.send_request(request)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"".join(proto.data_to_send()))
        status = 0
        while not status:
            data = s.recv(65536)
            if not data:
                raise ConnectionError("proxy closed the connection during the handshake")
            proto.receive_data(data)
            for ev in proto.events_received():
                if isinstance(ev, Response):
                    status = ev.status_code
        if status != 101:
            return status, ""
        proto.send_text(message.encode())
        s.sendall(b"".join(proto.data_to_send()))
        while True:
            data = s.recv(65536)
            if not data:
                raise ConnectionError("proxy closed the WebSocket")
            proto.receive_data(data)
            for ev in proto.events_received():
                if getattr(ev, "opcode", None) is Opcode.TEXT:
                    proto.send_close()
                    s.sendall(b"".join(proto.data_to_send()))
                    return status, ev.data.decode()
