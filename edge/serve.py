"""`edge-verify serve`: the public API (edge_verify.edge.api) as a local HTTP service, and the
browser capture page at `/` (edge/web/index.html).

Built on Starlette (ASGI) and uvicorn: pure-Python wheels, so they install on a Raspberry Pi as
they do on a PC. uvicorn parses HTTP with httptools where it is installed (C wheels for x86_64 and
64-bit ARM, where it is a dependency; its request head capped as h11 caps it), else with the
pure-Python h11. The model and the store are opened once per worker: a worker is a thread with
its own interpreter and its own store connection (neither may be shared between threads), and
at most BACKLOG_PER_WORKER requests per worker wait for one (more are answered 503 busy).
Bodies equal the CLI's --json documents; errors are {"error": {"code", "message"}} with the
status codes of STATUS. SIGTERM stops accepting connections, lets the requests in flight finish
(an enrolment is one store transaction either way), closes the stores and exits 0.

Authentication: `Authorization: Bearer TOKEN` (EDGE_VERIFY_TOKEN or --token-file), or the
session cookie that the capture page gets for the one-time token in the URL `serve` prints.
"""
import asyncio
import concurrent.futures
import hmac
import ipaddress
import queue
import secrets
import signal
import socket
import threading
from importlib import resources
from importlib.metadata import version
from pathlib import Path

import cv2
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from edge_verify.edge import api
from edge_verify.edge.capture.pad import SUFFIX_FORMATS, read_strokes, render_strokes
from edge_verify.edge.errors import (AlreadyEnrolledError, CaptureError, EdgeVerifyError, ImageError,
                                     ModelError, StoreError, UnknownUserError, UserLockedError)
from edge_verify.edge.limits import MAX_IMAGE_BYTES, MAX_STROKE_BYTES

TOKEN_ENV = "EDGE_VERIFY_TOKEN"
MIN_TOKEN_LENGTH = 16
SESSION_COOKIE = "edge_verify_session"
MAX_BODY_BYTES = MAX_IMAGE_BYTES    # a request carries at most what the CLI reads from one image file
MAX_HEAD_BYTES = 16 * 1024          # request line and headers: h11's cap (uvicorn's default), kept with httptools
BACKLOG_PER_WORKER = 8
GRACEFUL_SHUTDOWN_S = 30
MODES = ("new", "replace", "append")
PART_BYTES = {"image": MAX_IMAGE_BYTES, "strokes": MAX_STROKE_BYTES}  # the CLI's caps on one input

# error type -> (HTTP status, error code); the first that matches wins
STATUS = [
    (UserLockedError, 423, "locked_out"),
    (UnknownUserError, 404, "unknown_user"),
    (AlreadyEnrolledError, 409, "user_exists"),
    (ImageError, 400, "bad_image"),
    (CaptureError, 400, "bad_strokes"),
    (ModelError, 409, "other_model"),
    (StoreError, 503, "store_unavailable"),
    (EdgeVerifyError, 400, "bad_request"),
]


class HTTPError(EdgeVerifyError):
    """A refusal of the service itself (token, request shape, size, load), with its status."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


def status_of(error: EdgeVerifyError) -> tuple[int, str]:
    """(status, code) of an error: its own for HTTPError, else from STATUS."""
    if isinstance(error, HTTPError):
        return error.status, error.code
    if isinstance(error, ImageError) and error.reason == "too_large":
        return 413, "too_large"
    return next((status, code) for kind, status, code in STATUS if isinstance(error, kind))


# ------------------------------------------------------------------ settings checked at start


def read_token(token_file, environ) -> str | None:
    """The bearer token from --token-file or EDGE_VERIFY_TOKEN; None when neither is given."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise EdgeVerifyError(f"cannot read the token file {token_file}: {error}") from None
    else:
        token = environ.get(TOKEN_ENV, "").strip() or None
        if token is None:
            return None
    if len(token) < MIN_TOKEN_LENGTH or not token.isprintable():
        raise EdgeVerifyError(f"the token must be at least {MIN_TOKEN_LENGTH} printable characters "
                              "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, allow_remote: bool, token: str | None) -> None:
    """Refuse a non-loopback address unless --allow-remote is given and a token is set."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise EdgeVerifyError(f"refusing to listen on {host}, which is not a loopback address: other "
                              f"machines could reach the service; add --allow-remote (and set {TOKEN_ENV})")
    if token is None:
        raise EdgeVerifyError(f"--allow-remote needs a token: set {TOKEN_ENV} or --token-file")


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: any free port).

    Made with proto IPPROTO_TCP, not 0 (socket.create_server): asyncio sets TCP_NODELAY only on
    connections whose socket says TCP, and without it every response waits ~40 ms for a delayed ACK.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError as error:
        sock.close()
        raise EdgeVerifyError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


# ------------------------------------------------------------------ the worker pool


class Workers:
    """`count` threads, each holding a model and a store of its own; run() queues a call."""

    def __init__(self, open_model, open_store, count: int, backlog: int):
        self.count = count
        self._jobs = queue.Queue(backlog)
        self._threads = []
        try:
            for _ in range(count):
                started = concurrent.futures.Future()
                thread = threading.Thread(target=self._work, args=(open_model, open_store, started),
                                          name="edge-verify-worker")
                thread.start()
                self._threads.append(thread)
                started.result()  # an error opening the model or the store stops the start
        except BaseException:
            self.close()
            raise

    def _work(self, open_model, open_store, started) -> None:
        try:
            model = open_model()
            store = open_store()
        except BaseException as error:
            started.set_exception(error)
            return
        started.set_result(None)
        try:
            while (job := self._jobs.get()) is not None:
                future, function, args = job
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(function(model, store, *args))
                    except BaseException as error:
                        future.set_exception(error)
        finally:
            store.close()

    async def run(self, function, *args):
        """function(model, store, *args) in a worker; HTTPError 503 when the backlog is full."""
        future = concurrent.futures.Future()
        try:
            self._jobs.put_nowait((future, function, args))
        except queue.Full:
            raise HTTPError(503, "busy", "the service is busy: too many requests are waiting; "
                                         "try again shortly") from None
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Let the queued and running calls finish, then stop the threads (closing their stores)."""
        for thread in self._threads:
            if thread.is_alive():
                self._jobs.put(None)
        for thread in self._threads:
            thread.join()


# ------------------------------------------------------------------ signatures in a request


class Signature:
    """One signature of a request: encoded image bytes, or pen strokes in a stroke format."""

    def __init__(self, kind: str, data: bytes, name: str):
        self.kind, self.data, self.name = kind, data, name

    def image(self):
        """What the API scores: the bytes of an image, or the strokes drawn as the pad renderer does."""
        if self.kind == "image":
            return self.data
        fmt = SUFFIX_FORMATS.get(Path(self.name).suffix.lower(), "jsonl")
        return render_strokes(read_strokes(self.data.splitlines(), fmt, self.name))

    @property
    def source(self) -> str:
        return "upload" if self.kind == "image" else "pad"


async def signatures(form) -> list[Signature]:
    """The `image` and `strokes` parts of a form, in order."""
    found = []
    for kind in ("image", "strokes"):
        for index, part in enumerate(form.getlist(kind), start=1):
            if isinstance(part, str):
                data, name = part.encode("utf-8"), f"{kind} field {index}"
            else:
                data, name = await part.read(), part.filename or f"{kind} part {index}"
                if kind == "strokes" and part.content_type == "text/csv" and "." not in name:
                    name += ".csv"
            if len(data) > PART_BYTES[kind]:
                raise HTTPError(413, "too_large", f"{name} is larger than {PART_BYTES[kind] // 1_000_000} MB, "
                                                  f"more than one {kind} may be")
            found.append(Signature(kind, data, name))
    return found


async def one_signature(request) -> tuple[object, Signature]:
    form = await request_form(request)
    found = await signatures(form)
    if len(found) != 1:
        raise HTTPError(400, "bad_request", f"send exactly one signature: one 'image' or one 'strokes' "
                                            f"part (got {len(found)})")
    return form, found[0]


async def request_form(request):
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPError(400, "bad_request", "send multipart/form-data")
    return await request.form(max_part_size=MAX_BODY_BYTES)


def form_count(form, name: str, default: int) -> int:
    """A whole number of at least 1 from the form (as the CLI's -k); `default` when absent."""
    text = form.get(name) or str(default)
    if not (isinstance(text, str) and text.isascii() and text.isdigit() and len(text) < 10 and int(text) >= 1):
        raise HTTPError(400, "bad_request", f"{name} must be a whole number of at least 1")
    return int(text)


# ------------------------------------------------------------------ the calls a worker makes


def _enroll(model, store, user, found, mode):
    return api.enroll(model, store, user, [s.image() for s in found], mode=mode,
                      source=found[0].source).to_dict()


def _check(model, store, user, signature, threshold, lockout):
    return api.check(model, store, user, signature.image(), threshold=threshold, **lockout).to_dict()


def _identify(model, store, signature, k, lockout):
    gallery = store.gallery(model.fingerprint)
    try:
        candidates = api.identify(model, store, signature.image(), k, gallery=gallery, **lockout)
    except StoreError as error:
        if not gallery.names:  # nobody to compare with: not the store's failure
            raise HTTPError(404, "no_users", str(error)) from None
        raise
    return {"candidates": [c.to_dict() for c in candidates]}


def _render(model, store, signature):
    return cv2.imencode(".png", signature.image())[1].tobytes()


def _users(model, store):
    return {"users": api.list_users(store, model.bundle)}


def _show(model, store, user):
    return api.show_user(store, user, model.bundle)


def _remove(model, store, user):
    api.remove_user(store, user)
    return {"removed": user}


def _unlock(model, store, user):
    return api.unlock_user(store, user)


def _info(model, store, profile):
    return {**api.info(model, store), "profile": profile}


# ------------------------------------------------------------------ the application


class Service:
    """The routes, their authentication and the mapping of errors to responses."""

    def __init__(self, workers: Workers, *, token: str | None, lockout: dict, threshold, profile: dict):
        self.workers, self.token = workers, token
        self.lockout, self.threshold, self.profile = lockout, threshold, profile
        self.page_token = secrets.token_urlsafe(24)   # one use: exchanged for the session cookie
        self._session = secrets.token_urlsafe(32)
        self.version = version("edge-verify")
        self._page = (resources.files("edge_verify.edge") / "web" / "index.html").read_bytes()

    def app(self):
        routes = [
            Route("/", self.page, methods=["GET"]),
            Route("/v1/health", self.health, methods=["GET"]),
            Route("/v1/info", self.info, methods=["GET"]),
            Route("/v1/users", self.users, methods=["GET"]),
            Route("/v1/users/{user}", self.show, methods=["GET"]),
            Route("/v1/users/{user}", self.remove, methods=["DELETE"]),
            Route("/v1/users/{user}/enroll", self.enroll, methods=["POST"]),
            Route("/v1/users/{user}/check", self.check, methods=["POST"]),
            Route("/v1/users/{user}/unlock", self.unlock, methods=["POST"]),
            Route("/v1/identify", self.identify, methods=["POST"]),
            Route("/v1/render", self.render, methods=["POST"]),
        ]
        handlers = {EdgeVerifyError: self.refusal, HTTPException: self.http_refusal,
                    Exception: self.failure}
        return Starlette(routes=routes, exception_handlers=handlers,
                         middleware=[Middleware(BodyLimit, limit=MAX_BODY_BYTES)])

    # ---------------------------------------------------------------- authentication

    def authorize(self, request) -> None:
        """HTTPError 401 unless the request carries the bearer token or the page's session cookie."""
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if self.token and scheme.lower() == "bearer" and _same(presented.strip(), self.token):
            return
        if _same(request.cookies.get(SESSION_COOKIE, ""), self._session):
            return
        raise HTTPError(401, "unauthorized", "missing or wrong token: send 'Authorization: Bearer "
                                             f"TOKEN' ({TOKEN_ENV}), or open the URL that serve printed")

    async def page(self, request):
        offered = request.query_params.get("token")
        if offered is None:
            return Response(self._page, media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})
        if self.page_token is None or not _same(offered, self.page_token):
            raise HTTPError(401, "unauthorized", "this link was used already or is wrong: restart "
                                                 "serve for a new one")
        self.page_token = None
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, self._session, httponly=True, samesite="strict", path="/")
        return response

    def page_url(self, host: str, port: int) -> str:
        where = f"[{host}]" if ":" in host else host
        return f"http://{where}:{port}/?token={self.page_token}"

    # ---------------------------------------------------------------- routes

    async def health(self, request):
        return _json({"status": "ok", "version": self.version, "workers": self.workers.count})

    async def info(self, request):
        self.authorize(request)
        return _json(await self.workers.run(_info, self.profile))

    async def users(self, request):
        self.authorize(request)
        return _json(await self.workers.run(_users))

    async def show(self, request):
        self.authorize(request)
        return _json(await self.workers.run(_show, request.path_params["user"]))

    async def remove(self, request):
        self.authorize(request)
        return _json(await self.workers.run(_remove, request.path_params["user"]))

    async def unlock(self, request):
        self.authorize(request)
        return _json(await self.workers.run(_unlock, request.path_params["user"]))

    async def enroll(self, request):
        self.authorize(request)
        form = await request_form(request)
        mode = form.get("mode") or "new"
        if mode not in MODES:
            raise HTTPError(400, "bad_request", f"mode must be one of {', '.join(MODES)}, not {str(mode)[:40]!r}")
        found = await signatures(form)
        if len({signature.kind for signature in found}) != 1:
            raise HTTPError(400, "bad_request", "send one or more 'image' parts, or one or more "
                                                "'strokes' parts (not both)")
        return _json(await self.workers.run(_enroll, request.path_params["user"], found, mode))

    async def check(self, request):
        self.authorize(request)
        form, signature = await one_signature(request)
        threshold = form.get("threshold") or self.threshold  # the API checks it (0..2)
        return _json(await self.workers.run(_check, request.path_params["user"], signature, threshold,
                                            self.lockout))

    async def identify(self, request):
        self.authorize(request)
        form, signature = await one_signature(request)
        k = form_count(form, "k", 5)
        return _json(await self.workers.run(_identify, signature, k, self.lockout))

    async def render(self, request):
        """The strokes drawn as the verifier sees them (PNG): the capture page's preview."""
        self.authorize(request)
        _, signature = await one_signature(request)
        if signature.kind != "strokes":
            raise HTTPError(400, "bad_request", "render takes a 'strokes' part")
        return Response(await self.workers.run(_render, signature), media_type="image/png")

    # ---------------------------------------------------------------- errors

    async def refusal(self, request, error):
        status, code = status_of(error)
        return _error(status, code, str(error), {"WWW-Authenticate": "Bearer"} if status == 401 else None)

    async def http_refusal(self, request, error):
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        return _error(error.status_code, codes.get(error.status_code, "bad_request"), str(error.detail),
                      error.headers)

    async def failure(self, request, error):
        import traceback
        traceback.print_exception(error)
        return _error(500, "internal", f"unexpected {type(error).__name__} (a bug in edge-verify; "
                                       "the service log shows where)")


def _same(presented: str, expected: str) -> bool:
    """Constant-time comparison (hmac.compare_digest), for str of any characters."""
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def _json(data, status: int = 200, headers=None):
    return JSONResponse(data, status_code=status, headers=headers)


def _error(status: int, code: str, message: str, headers=None):
    return _json({"error": {"code": code, "message": message}}, status, headers)


# ------------------------------------------------------------------ the HTTP parser


def http_protocol():
    """What uvicorn parses HTTP with: httptools (C; a check answers about 0.25 ms sooner than
    with h11) with its request head capped (HeadLimitedHttpTools), or h11 where httptools is not
    installed (it is a dependency only where wheels exist: x86_64 and 64-bit ARM)."""
    return HeadLimitedHttpTools if HeadLimitedHttpTools is not None else "h11"


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # no httptools: uvicorn's pure-Python h11 parser
    HeadLimitedHttpTools = None
else:
    class HeadLimitedHttpTools(HttpToolsProtocol):
        """uvicorn's httptools protocol, refusing a request head (request line and headers) that
        is still incomplete after MAX_HEAD_BYTES, with the 400 uvicorn gives a malformed request.

        h11 refuses such a head the same way (uvicorn's h11_max_incomplete_event_size, 16 KiB by
        default); httptools alone would keep reading one without end, in memory. A head that
        arrives whole in one read is parsed whatever its size, by either parser.
        """
        _head_bytes = 0      # bytes received since the head now being read began
        _in_body = False     # between a request's headers and its end
        _marks = 0           # heads and requests completed so far

        def on_headers_complete(self) -> None:
            self._in_body = True
            self._marks += 1
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_body = False
            self._marks += 1
            super().on_message_complete()

        def data_received(self, data: bytes) -> None:
            marks = self._marks
            super().data_received(data)
            if self._marks != marks:  # a head or a request ended in this read: a new head began here
                self._head_bytes = 0
            elif not self._in_body and not self.transport.is_closing():  # all of it was head
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self.logger.warning("Invalid HTTP request received: a request head over %d bytes",
                                        MAX_HEAD_BYTES)
                    self.send_400_response("Invalid HTTP request received.")


class BodyLimit:
    """ASGI middleware: 413 for a body over `limit` bytes, declared (Content-Length) or streamed."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")  # the server checked its form
        if declared.isdigit() and int(declared) > self.limit:
            return await _error(413, "too_large", self._message())(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPError(413, "too_large", self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"the request body is larger than {self.limit // 1_000_000} MB"


# ------------------------------------------------------------------ run


def serve(settings, *, host: str, port: int, workers: int, token: str | None, lockout: dict,
          threshold, profile: dict, announce=print) -> None:
    """Run the service until SIGTERM or SIGINT; `settings` is the CLI's Settings (model, db)."""
    sock = listen(host, port)  # first: a port in use fails before the models load
    try:
        pool = Workers(lambda: settings.with_defaults().load_model(), lambda: api.open_store(settings.db),
                       workers, BACKLOG_PER_WORKER * workers)
    except BaseException:
        sock.close()
        raise
    try:
        service = Service(pool, token=token, lockout=lockout, threshold=threshold, profile=profile)
        port = sock.getsockname()[1]
        config = uvicorn.Config(service.app(), http=http_protocol(), log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
        announce(f"edge-verify serving on http://{host}:{port} ({workers} workers; "
                 f"{'bearer token set' if token else f'no {TOKEN_ENV}: only the capture page can sign in'})")
        announce(f"capture page (the link works once): {service.page_url(host, port)}")
        # uvicorn re-raises the signal that stopped it once it has shut down; a handler of our
        # own receives it then, so the process exits 0 after closing the stores below.
        for stop in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop, lambda *_: None)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        pool.close()
