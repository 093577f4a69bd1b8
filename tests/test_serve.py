"""`edge-verify serve` through a real HTTP client (http.client over loopback), in a subprocess:
every endpoint and error code, the page's one-time link, concurrency and SIGTERM (issue 17)."""
import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DATASETS

EDGE_VERIFY = Path(sys.executable).parent / "edge-verify"
DEMO = Path(__file__).resolve().parents[1] / "edge" / "demo"
STROKES = DATASETS / "mcyt100-online" / "writer_001" / "genuine"
TOKEN = "serve-test-token-0123456789"
PROFILE = "[security]\nmax_failed_checks = 2\nlockout_seconds = 300\n"


def demo(name: str) -> tuple[str, str, bytes]:
    return ("image", name, (DEMO / name).read_bytes())


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def jsonl_strokes(shift: float = 0.0) -> bytes:
    """A small signature in the JSON lines stroke format: two strokes with pen pressure."""
    lines = []
    for stroke in range(2):
        for i in range(40):
            x = 10 * i + 5 * stroke
            y = 100 + 40 * np.sin(i / (4 + shift)) + 60 * stroke
            lines.append(json.dumps({"x": x, "y": y, "pressure": 0.3 + i / 100, "t": 10 * (i + 40 * stroke),
                                     "up": i == 39}))
    return ("\n".join(lines) + "\n").encode()


def form(fields=(), files=()) -> tuple[bytes, str]:
    """(body, Content-Type) of multipart/form-data: fields (name, value), files (name, filename, bytes)."""
    boundary = uuid.uuid4().hex
    chunks = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
              for name, value in fields]
    chunks += [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
               f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
               for name, filename, data in files]
    return b"".join(chunks) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Server:
    """`edge-verify serve` in a subprocess on a free port, with its own store."""

    def __init__(self, folder: Path, *options, env=None):
        folder.mkdir(parents=True, exist_ok=True)
        self.db, profile = folder / "store.sqlite3", folder / "serve.toml"
        profile.write_text(PROFILE)
        self.command = [str(EDGE_VERIFY), "--db", str(self.db), "--profile", str(profile)]
        self.log = open(folder / "serve.log", "w+")
        self.process = subprocess.Popen(
            [*self.command, "serve", "--port", "0", *options], stdout=subprocess.PIPE, stderr=self.log,
            text=True, env={**os.environ, "EDGE_VERIFY_TOKEN": TOKEN, **(env or {})})
        line = self.process.stdout.readline()
        if not line.startswith("edge-verify serving on"):
            self.process.wait(30)
            self.log.seek(0)
            raise AssertionError(f"serve did not start: {line}{self.log.read()}")
        self.port = int(re.search(r":(\d+) ", line).group(1))
        self.page_url = self.process.stdout.readline().split(": ", 1)[1].strip()

    def request(self, method, path, body=b"", content_type=None, token=TOKEN, headers=()):
        """(status, JSON body or raw bytes, response headers)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        sent = dict(headers)
        if token:
            sent["Authorization"] = f"Bearer {token}"
        if content_type:
            sent["Content-Type"] = content_type
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        is_json = response.getheader("content-type", "").startswith("application/json")
        return response.status, json.loads(data) if is_json else data, response

    def get(self, path, **options):
        return self.request("GET", path, **options)[:2]

    def post(self, path, fields=(), files=(), **options):
        body, content_type = form(fields, files)
        return self.request("POST", path, body, content_type, **options)[:2]

    def cli(self, *arguments) -> dict:
        """The CLI's --json document of a command on the same store."""
        result = subprocess.run([*self.command, *arguments, "--json"], capture_output=True, text=True)
        assert result.returncode in (0, 1), result.stderr
        return json.loads(result.stdout)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        self.process.stdout.close()
        self.log.close()
        return code


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = Server(tmp_path_factory.mktemp("serve"))
    yield running
    assert running.stop() == 0


def enroll(server, user, *names, mode=None):
    return server.post(f"/v1/users/{user}/enroll", [("mode", mode)] if mode else [],
                       [demo(name) for name in names])


def assert_error(answer, status, code):
    got_status, body = answer
    assert (got_status, body["error"]["code"]) == (status, code), body
    assert body["error"]["message"]


# ------------------------------------------------------------------ endpoints


def test_health_answers_without_a_token(server):
    status, body = server.get("/v1/health", token=None)
    assert status == 200 and body["status"] == "ok" and body["workers"] == 2


PROTECTED = [("GET", "/v1/info"), ("GET", "/v1/users"), ("GET", "/v1/users/alice"),
             ("DELETE", "/v1/users/alice"), ("POST", "/v1/users/alice/enroll"),
             ("POST", "/v1/users/alice/check"), ("POST", "/v1/users/alice/unlock"),
             ("POST", "/v1/identify"), ("POST", "/v1/render")]


@pytest.mark.parametrize("method,path", PROTECTED)
def test_every_other_endpoint_needs_the_token(server, method, path):
    for token in (None, TOKEN[:-1] + "x", TOKEN + "x"):
        status, body, response = server.request(method, path, token=token)
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        assert response.getheader("www-authenticate") == "Bearer"
    status, body, _ = server.request(method, path, headers={"Authorization": f"Basic {TOKEN}"}, token=None)
    assert status == 401


def test_enroll_check_identify_and_users_answer_as_the_cli_does(server):
    status, enrolled = enroll(server, "alice", "alice_ref_1.jpg", "alice_ref_2.jpg", "alice_ref_3.jpg")
    assert status == 200
    assert (enrolled["user"], enrolled["mode"], enrolled["added"], enrolled["references"]) == ("alice", "new", 3, 3)
    status, appended = enroll(server, "alice", "alice_ref_4.jpg", mode="append")
    assert (status, appended["mode"], appended["references"]) == (200, "append", 4)

    status, checked = server.post("/v1/users/alice/check", files=[demo("alice_genuine.jpg")])
    assert status == 200 and checked["result"] in ("MATCH", "NO MATCH")
    cli_check = server.cli("check", "alice", str(DEMO / "alice_genuine.jpg"))
    assert checked == cli_check  # the same store, model and image: the same verdict, field for field
    server.post("/v1/users/alice/unlock")  # two NO MATCHes would lock alice (max_failed_checks = 2)
    status, lenient = server.post("/v1/users/alice/check", [("threshold", "2")], [demo("bob_genuine.jpg")])
    assert (status, lenient["match"], lenient["threshold_source"]) == (200, True, "override")
    status, strict = server.post("/v1/users/alice/check", [("threshold", "0")], [demo("alice_genuine.jpg")])
    assert (status, strict["match"], strict["result"]) == (200, False, "NO MATCH")  # a NO MATCH is a 200
    server.post("/v1/users/alice/unlock")

    status, found = server.post("/v1/identify", [("k", "1")], [demo("alice_genuine.jpg")])
    assert status == 200 and len(found["candidates"]) == 1
    assert set(found["candidates"][0]) == set(server.cli("identify", str(DEMO / "alice_genuine.jpg"))["candidates"][0])
    server.post("/v1/users/alice/unlock")  # each identify counts as a check of alice: two no-matches lock her

    for path, command in (("/v1/users", ["users", "list"]), ("/v1/users/alice", ["users", "show", "alice"]),
                          ("/v1/info", ["info"])):
        status, body = server.get(path)
        cli = server.cli(*command)
        assert status == 200 and body == cli, path

    status, unlocked = server.post("/v1/users/alice/unlock")
    assert (status, unlocked) == (200, {"user": "alice", "was_locked": False})


def test_strokes_enrol_and_check_in_both_formats(server):
    csv_files = [("strokes", path.name, path.read_bytes()) for path in sorted(STROKES.glob("genuine_0[1-3].csv"))]
    status, enrolled = server.post("/v1/users/pen/enroll", files=csv_files)
    assert (status, enrolled["references"]) == (200, 3)
    assert {r["source"] for r in server.get("/v1/users/pen")[1]["references"]} == {"pad"}
    status, checked = server.post("/v1/users/pen/check", [("threshold", "2")],
                                  [("strokes", "query.jsonl", jsonl_strokes())])
    assert (status, checked["match"]) == (200, True)
    status, image, response = server.request("POST", "/v1/render", *form(files=[("strokes", "s.jsonl", jsonl_strokes())]))
    assert status == 200 and response.getheader("content-type") == "image/png"
    assert cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_GRAYSCALE).min() == 0  # ink on white


def test_remove_deletes_the_user(server):
    assert enroll(server, "carol", "bob_genuine.jpg")[0] == 200
    status, body, _ = server.request("DELETE", "/v1/users/carol")
    assert (status, body) == (200, {"removed": "carol"})
    assert_error(server.get("/v1/users/carol"), 404, "unknown_user")


# ------------------------------------------------------------------ errors


def test_bad_input_is_400_never_500(server):
    assert enroll(server, "dave", "alice_ref_5.jpg")[0] == 200
    jpeg = (DEMO / "alice_genuine.jpg").read_bytes()
    check = "/v1/users/dave/check"
    cases = {
        "a damaged image": server.post(check, files=[("image", "a.jpg", jpeg[:300])]),
        "not an image": server.post(check, files=[("image", "a.txt", b"hello")]),
        "a blank page": server.post(check, files=[("image", "blank.png", png(np.full((300, 500), 255, np.uint8)))]),
        "strokes ending pen down": server.post(check, files=[("strokes", "s.jsonl", b'{"x": 1, "y": 2}\n')]),
        "strokes of garbage": server.post(check, files=[("strokes", "s.csv", b"\xff\xfe\x00garbage")]),
    }
    assert {name: (s, b["error"]["code"]) for name, (s, b) in cases.items()} == {
        "a damaged image": (400, "bad_image"), "not an image": (400, "bad_image"),
        "a blank page": (400, "bad_image"), "strokes ending pen down": (400, "bad_strokes"),
        "strokes of garbage": (400, "bad_strokes")}
    image = [demo("alice_genuine.jpg")]
    for fields in ([("threshold", "abc")], [("threshold", "3")], [("threshold", "nan")], [("threshold", "-0.1")]):
        assert_error(server.post(check, fields, image), 400, "bad_request")
    assert_error(server.post("/v1/identify", [("k", "0")], image), 400, "bad_request")
    assert_error(server.post("/v1/identify", [("k", "1e3")], image), 400, "bad_request")
    assert_error(server.post(check, files=image * 2), 400, "bad_request")
    assert_error(server.post(check), 400, "bad_request")
    assert_error(server.request("POST", check, b"{}", "application/json")[:2], 400, "bad_request")
    assert_error(server.request("POST", check, b"--x\r\nbroken", "multipart/form-data; boundary=x")[:2], 400,
                 "bad_request")
    assert_error(server.post("/v1/users/dave/enroll", [("mode", "merge")], image), 400, "bad_request")
    assert_error(server.post("/v1/users/dave/enroll"), 400, "bad_request")
    assert_error(server.post("/v1/users/%01/check", files=image), 400, "bad_request")
    assert_error(server.post("/v1/users/dave/enroll", [("mode", "append")], [demo("alice_ref_5.jpg")]),
                 400, "bad_request")  # the same scan twice
    assert_error(server.post("/v1/render", files=image), 400, "bad_request")


def test_unknown_user_404_existing_user_409_and_unknown_routes(server):
    image = [demo("alice_genuine.jpg")]
    assert_error(server.post("/v1/users/nobody/check", files=image), 404, "unknown_user")
    assert_error(server.post("/v1/users/nobody/unlock"), 404, "unknown_user")
    assert_error(server.request("DELETE", "/v1/users/nobody")[:2], 404, "unknown_user")
    assert_error(server.post("/v1/users/nobody/enroll", [("mode", "append")], image), 404, "unknown_user")
    assert enroll(server, "erin", "alice_ref_1.jpg")[0] == 200
    assert_error(enroll(server, "erin", "alice_ref_2.jpg"), 409, "user_exists")
    assert enroll(server, "erin", "alice_ref_2.jpg", mode="replace")[1]["references"] == 1
    assert_error(server.get("/v1/nothing"), 404, "not_found")
    status, body, response = server.request("PUT", "/v1/users")
    assert_error((status, body), 405, "method_not_allowed")
    assert "GET" in response.getheader("allow")


def test_too_large_is_413(server):
    assert enroll(server, "ivan", "alice_ref_1.jpg")[0] == 200
    status, body, _ = server.request("POST", "/v1/users/ivan/check", b"",
                                     "multipart/form-data; boundary=x", headers={"Content-Length": str(10**9)})
    assert (status, body["error"]["code"]) == (413, "too_large")
    header = png(np.zeros((8, 8), np.uint8))
    huge = header[:16] + (30_000).to_bytes(4, "big") * 2 + header[24:]  # claims 30000 x 30000 pixels
    assert_error(server.post("/v1/users/ivan/check", files=[("image", "huge.png", huge)]), 413, "too_large")
    from edge_verify.edge.limits import MAX_STROKE_BYTES
    long_recording = jsonl_strokes() * (MAX_STROKE_BYTES // len(jsonl_strokes()) + 1)
    assert_error(server.post("/v1/users/ivan/check", files=[("strokes", "s.jsonl", long_recording)]), 413,
                 "too_large")


def test_an_endless_request_head_is_refused_and_the_service_goes_on(server):
    """Headers that never end are refused once over MAX_HEAD_BYTES (whichever HTTP parser runs:
    tests/test_serve_http.py), before any token is read; other clients are still answered."""
    from edge_verify.edge.serve import MAX_HEAD_BYTES
    from test_serve_http import exchange

    line = b"X-Padding: " + b"a" * 989 + b"\r\n"
    answer = exchange(server.port, [b"GET /v1/users HTTP/1.1\r\nHost: x\r\n"]
                      + [line] * (4 * MAX_HEAD_BYTES // len(line)), pause=0.002)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert server.get("/v1/health", token=None)[0] == 200


def test_a_streamed_body_over_the_limit_is_stopped_as_it_arrives():
    """A chunked upload declares no length: the body is counted as it is read."""
    import asyncio

    from edge_verify.edge.serve import BodyLimit, HTTPError

    chunks = [{"type": "http.request", "body": b"x" * 6, "more_body": True} for _ in range(3)]
    read = []

    async def app(scope, receive, send):
        while (message := await receive())["more_body"]:
            read.append(message["body"])

    async def receive():
        return chunks.pop(0)

    with pytest.raises(HTTPError) as refused:
        asyncio.run(BodyLimit(app, limit=10)({"type": "http", "headers": []}, receive, None))
    assert (refused.value.status, refused.value.code, read) == (413, "too_large", [b"x" * 6])


def test_locked_out_user_is_423_until_unlocked(server):
    assert enroll(server, "frank", "alice_ref_1.jpg", "alice_ref_2.jpg")[0] == 200
    never = ([("threshold", "0")], [demo("alice_genuine.jpg")])
    assert [server.post("/v1/users/frank/check", *never)[0] for _ in range(2)] == [200, 200]
    assert_error(server.post("/v1/users/frank/check", *never), 423, "locked_out")
    assert server.post("/v1/users/frank/unlock")[1] == {"user": "frank", "was_locked": True}
    assert server.post("/v1/users/frank/check", *never)[0] == 200


def test_a_locked_store_is_503(server):
    assert enroll(server, "gina", "alice_ref_1.jpg")[0] == 200
    with sqlite3.connect(server.db, isolation_level=None) as holder:
        holder.execute("BEGIN EXCLUSIVE")  # another program holds the write lock past the 5 s wait
        answer = enroll(server, "gina", "alice_ref_3.jpg", mode="append")
        holder.execute("ROLLBACK")
    assert_error(answer, 503, "store_unavailable")
    assert server.get("/v1/users/gina")[1]["references"][0]["source"] == "upload"


def test_a_full_backlog_is_503_busy():
    from edge_verify.edge.serve import HTTPError, Workers

    class Nothing:
        def close(self):
            pass

    release = threading.Event()
    workers = Workers(lambda: None, Nothing, count=1, backlog=1)
    try:
        async def three():
            import asyncio
            running = asyncio.ensure_future(workers.run(lambda m, s: release.wait(10)))
            await asyncio.sleep(0.1)  # the worker has taken the first call
            queued = asyncio.ensure_future(workers.run(lambda m, s: "queued"))
            await asyncio.sleep(0)  # the second waits in the backlog
            with pytest.raises(HTTPError) as refused:
                await workers.run(lambda m, s: "too many")
            release.set()
            return refused.value, await running, await queued

        import asyncio
        refused, first, second = asyncio.run(three())
        assert (refused.status, refused.code, first, second) == (503, "busy", True, "queued")
    finally:
        release.set()
        workers.close()


# ------------------------------------------------------------------ the page's sign-in


def test_page_link_gives_a_strict_httponly_cookie_once(server, tmp_path):
    assert server.get("/", token=None)[0] == 200  # the page itself holds no secret
    path = server.page_url.split(str(server.port), 1)[1]
    assert_error(server.get(path.replace("token=", "token=x"), token=None), 401, "unauthorized")
    status, _, response = server.request("GET", path, token=None)
    assert status == 303 and response.getheader("location") == "/"
    cookie = response.getheader("set-cookie")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie, cookie
    session = cookie.split(";", 1)[0]
    status, body = server.get("/v1/users", token=None, headers={"Cookie": session})
    assert status == 200 and "users" in body
    assert server.get("/v1/users", token=None, headers={"Cookie": session[:-2] + "xx"})[0] == 401
    assert_error(server.get(path, token=None), 401, "unauthorized")  # the link works once


# ------------------------------------------------------------------ start-up refusals


def run_serve(tmp_path, *options, env=None):
    return subprocess.run([str(EDGE_VERIFY), "--db", str(tmp_path / "s.db"), "serve", *options],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


def test_a_non_loopback_address_needs_allow_remote_and_a_token(tmp_path):
    without = {"EDGE_VERIFY_TOKEN": ""}
    refused = run_serve(tmp_path, "--host", "0.0.0.0", env={"EDGE_VERIFY_TOKEN": TOKEN})
    assert refused.returncode == 2 and "--allow-remote" in refused.stderr
    refused = run_serve(tmp_path, "--host", "0.0.0.0", "--allow-remote", env=without)
    assert refused.returncode == 2 and "needs a token" in refused.stderr
    short = tmp_path / "token"
    short.write_text("short\n")
    refused = run_serve(tmp_path, "--token-file", str(short))
    assert refused.returncode == 2 and "at least 16" in refused.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        refused = run_serve(tmp_path, "--port", str(taken.getsockname()[1]))
    assert refused.returncode == 2 and "cannot listen on 127.0.0.1" in refused.stderr
    assert not (tmp_path / "s.db").exists()


# ------------------------------------------------------------------ concurrency and shutdown


def test_four_clients_check_while_one_enrols(server):
    assert enroll(server, "hana", "alice_ref_1.jpg", "alice_ref_2.jpg")[0] == 200
    statuses, errors = [], []

    def checker():
        for _ in range(6):
            status, body = server.post("/v1/users/hana/check", [("threshold", "2")], [demo("alice_genuine.jpg")])
            statuses.append(status)
            if status != 200 or not body["match"]:
                errors.append(body)

    def enroller():
        for index in range(4):
            status, body = enroll(server, f"busy{index}", "alice_ref_3.jpg", "alice_ref_4.jpg")
            statuses.append(status)
            if status != 200:
                errors.append(body)

    threads = [threading.Thread(target=checker) for _ in range(4)] + [threading.Thread(target=enroller)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == [] and statuses == [200] * 28
    users = {u["name"]: u["references"] for u in server.get("/v1/users")[1]["users"]}
    assert all(users[f"busy{index}"] == 2 for index in range(4))
    with sqlite3.connect(server.db) as raw:
        logged = raw.execute("SELECT COUNT(*) FROM checks WHERE user = 'hana'").fetchone()[0]
    assert logged == 24


def test_workers_keep_the_store_shared_with_other_processes(tmp_path):
    """Each worker holds its own connection to the store; another program reading the store and
    closing it must not take the service's writes with it (SQLite's locks of the process hold)."""
    import asyncio

    from edge_verify.edge import api
    from edge_verify.edge.serve import Workers

    db = tmp_path / "store.sqlite3"
    workers = Workers(lambda: None, lambda: api.open_store(db), count=2, backlog=4)

    def log(model, store, user):
        store.log_check(user, "check", "match", model_fingerprint="test")

    reader = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
              "print(db.execute('SELECT user FROM checks ORDER BY id DESC').fetchone()[0]); db.close()")
    try:
        for user in ("first", "second", "third"):
            asyncio.run(workers.run(log, user))
            # another process reads the store and closes it (e.g. `edge-verify users list`)
            latest = subprocess.run([sys.executable, "-c", reader, str(db)], capture_output=True, text=True)
            assert latest.stdout.strip() == user, latest.stderr
    finally:
        workers.close()
    with sqlite3.connect(db) as raw:
        assert [row[0] for row in raw.execute("SELECT user FROM checks ORDER BY id")] == ["first", "second", "third"]


def refuses_connections(port: int, seconds: float = 20) -> bool:
    """Whether the port stops accepting connections within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except OSError:
            return True
        time.sleep(0.1)
    return False


def test_sigterm_during_an_enrolment_finishes_it_and_exits_cleanly(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")  # the token from a file this time
    running = Server(tmp_path / "s", "--token-file", str(token_file), env={"EDGE_VERIFY_TOKEN": ""})
    body, content_type = form([("mode", "new")], [demo(f"alice_ref_{i}.jpg") for i in range(1, 6)])
    client = socket.create_connection(("127.0.0.1", running.port), timeout=60)
    client.sendall(f"POST /v1/users/zoe/enroll HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                   f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                   + body[:len(body) // 2])
    time.sleep(0.3)
    running.process.send_signal(signal.SIGTERM)  # half the images are sent
    assert refuses_connections(running.port)
    client.sendall(body[len(body) // 2:])
    answer = b""
    while chunk := client.recv(65536):
        answer += chunk
    client.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["references"] == 5
    assert running.stop() == 0
    with sqlite3.connect(running.db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert raw.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 5


def test_the_service_benchmark_runs(capsys):
    from edge_verify.edge import serve
    from edge_verify.tools import serve_bench
    if not (DATASETS / serve_bench.QUERY).is_file():
        pytest.skip(f"needs the CEDAR scans in {DATASETS}")
    report = serve_bench.run(quick=True)
    serve_bench.print_table(report)
    parser = report.pop("http_parser")
    assert set(report) == {"api_check_ms", "cli_check_ms", "service_1_median_ms", "service_1_p99_ms",
                           "service_4_median_ms", "service_4_p99_ms"}
    assert all(value > 0 for value in report.values())
    assert parser == ("h11" if serve.HeadLimitedHttpTools is None else "httptools")
    out = capsys.readouterr().out
    assert "service, 4 clients: p99" in out and f"HTTP parser: {parser}" in out
