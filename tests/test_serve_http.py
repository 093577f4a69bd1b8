"""The HTTP parser of `edge-verify serve` (edge/serve.py, http_protocol): httptools where it is
installed, with its request head capped as h11 caps it, else h11. Both are run here on a real
socket with a tiny ASGI app, so the two behave alike: a head still incomplete after
MAX_HEAD_BYTES is refused with 400 and the connection closed; normal, large-but-allowed and
kept-alive (also pipelined) requests are answered."""
import select
import socket
import threading
import time

import pytest
import uvicorn

from edge_verify.edge import serve
from edge_verify.edge.serve import MAX_HEAD_BYTES, http_protocol, listen

PARSERS = ["h11", pytest.param("httptools", marks=pytest.mark.skipif(
    serve.HeadLimitedHttpTools is None, reason="httptools is not installed (no wheel for this machine)"))]


async def echo_length(scope, receive, send):
    """200 with the number of body bytes received."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(size).encode()})


@pytest.fixture(params=PARSERS)
def port(request):
    protocol = "h11" if request.param == "h11" else http_protocol()
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(echo_length, http=protocol, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(10)
    sock.close()


def exchange(port: int, chunks, pause: float = 0.0, stop_at_answer: bool = True) -> bytes:
    """Send the chunks (one send each, `pause` s apart), by default until the server answers, then
    read until it closes or goes quiet. Sending stops at the first answer: data sent to a socket the server
    has closed would make it reset the connection, which may drop the answer unread."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        for chunk in chunks:
            if stop_at_answer and select.select([connection], [], [], 0)[0]:
                break
            try:
                connection.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(pause)
        received = b""
        connection.settimeout(1)
        try:
            while data := connection.recv(65536):
                received += data
        except (TimeoutError, socket.timeout, ConnectionResetError):
            pass
        return received


def test_the_service_uses_httptools_when_installed():
    expected = "h11" if serve.HeadLimitedHttpTools is None else serve.HeadLimitedHttpTools
    assert http_protocol() == expected


def test_endless_head_is_refused(port):
    line = b"X-Padding: " + b"a" * 1000 + b"\r\n"
    chunks = [b"GET / HTTP/1.1\r\nHost: x\r\n"] + [line] * (4 * MAX_HEAD_BYTES // len(line))
    answer = exchange(port, chunks, pause=0.002)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Invalid HTTP request received." in answer


def test_endless_header_value_is_refused(port):
    """One header whose value never ends (httptools would keep it all in memory)."""
    chunks = [b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: "] + [b"a" * 1000] * (4 * MAX_HEAD_BYTES // 1000)
    answer = exchange(port, chunks, pause=0.002)
    assert answer.startswith(b"HTTP/1.1 400 ")


def test_head_under_the_cap_sent_in_pieces_is_answered(port):
    head = b"POST / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * (MAX_HEAD_BYTES // 2) + b"\r\n" \
        + b"Content-Length: 5\r\n\r\n"
    chunks = [head[i:i + 1000] for i in range(0, len(head), 1000)] + [b"hello"]
    assert exchange(port, chunks, pause=0.002).startswith(b"HTTP/1.1 200 ")


def test_kept_alive_and_pipelined_requests_with_bodies(port):
    """Many requests on one connection, bodies larger than the head cap, some sent in one write:
    the bodies never count as head."""
    body = b"x" * (3 * MAX_HEAD_BYTES)
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    last = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = exchange(port, [request * 3, request[:100], request[100:] + request, last], pause=0.01,
                      stop_at_answer=False)
    assert answer.count(b"HTTP/1.1 200 ") == 6
    assert answer.count(str(len(body)).encode()) == 5
