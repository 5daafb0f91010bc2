"""A local endpoint with the SageMaker inference contract: ``GET /ping`` and ``POST
/invocations``, answered by the model's own ``model_fn`` / ``input_fn`` / ``predict_fn`` /
``output_fn`` (from the ``SAGEMAKER_SUBMIT_DIRECTORY`` archive, ``SAGEMAKER_PROGRAM``).

Binds to 127.0.0.1 and answers only requests whose Host is a loopback name (a page in a local
browser cannot reach it through DNS rebinding) unless told otherwise; one thread per connection,
at most ``max_connections`` (then 503); headers within ``header_timeout``, the body within
``body_timeout`` (a slow client cannot hold a thread); bodies over ``max_bytes`` (SageMaker's
real-time limit is 6 MB) get 413, a missing or negative Content-Length 411 / 400; a payload the
handlers reject (``ValueError``) gets 400 with the message; an unsupported content type 415;
anything else 500 without a traceback (it goes to the log). One model thread per request: the
server sets ``OMP_NUM_THREADS=1`` (unless set), since a row's prediction gains nothing from
OpenMP and requests on many threads each starting OpenMP teams oversubscribe the cores.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

from mlprep.errors import MlprepError
from mlprep.pipeline.registry import Registry

log = logging.getLogger("mlprep.endpoint")
MAX_BYTES = 6 * 1024 * 1024
SWITCH_GRACE = 1.0  # seconds an old server keeps answering after its endpoint points elsewhere
DRAIN = 4.0  # seconds a stopping server gives the requests it is answering (stop() waits 5)


class Model:
    """A model loaded through its inference handlers (verified artifacts only)."""

    def __init__(self, registry: Registry, ref: str, workdir: Path) -> None:
        self.record = registry.resolve_serving(ref)
        dirs = registry.verified_artifacts(self.record, workdir)
        env = Registry.container(self.record).get("Environment") or {}
        program = env.get("SAGEMAKER_PROGRAM", "inference.py")
        code = dirs.get("code", dirs["model"] / "code")
        self.module = _load_module(code / program)
        if not hasattr(self.module, "model_fn"):
            raise ValueError(f"{program} has no model_fn")
        self.model = self.module.model_fn(str(dirs["model"]))

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        m = self.module
        data = m.input_fn(body, content_type) if hasattr(m, "input_fn") else body
        pred = m.predict_fn(data, self.model) if hasattr(m, "predict_fn") else self.model.predict(data)
        if hasattr(m, "output_fn"):
            out, ctype = m.output_fn(pred, accept)
        else:
            out, ctype = json.dumps(pred), "application/json"
        return (out.encode() if isinstance(out, str) else out), ctype


def _load_module(path: Path) -> ModuleType:
    """The inference program, loaded by its path under a module name of its own (the import path
    is left alone: modules beside it are not importable by name)."""
    if not path.is_file():
        raise FileNotFoundError(f"inference program {path.name} is not in the code archive")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    name = f"mlprep_inference_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"inference program {path.name} is not a Python file")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # while it runs, as an import would (dataclasses and pickle look it up)
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


class EndpointError(MlprepError):
    """An endpoint answered with an error status (``status``) or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {message}" if status else message)


class Endpoint:
    """A local endpoint as the registry records it: its address, and requests to it."""

    def __init__(self, registry: Registry, name: str) -> None:
        self.registry = registry
        self.record = registry.endpoint(name)

    @property
    def name(self) -> str:
        return self.record["EndpointName"]

    @property
    def url(self) -> str:
        return self.record["Url"]

    @property
    def pid(self) -> int:
        return int(self.record["Pid"])

    def call(self, body: bytes | str, content_type: str = "text/csv", accept: str = "application/json",
             timeout: float = 30.0) -> tuple[bytes, str]:
        """POST ``body`` to ``/invocations``: (answer, its content type); an error status raises
        :class:`EndpointError` with the server's message."""
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(self.url + "/invocations", data=data, method="POST",
                                     headers={"Content-Type": content_type, "Accept": accept})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            raise EndpointError(e.code, e.read().decode(errors="replace")) from None
        except urllib.error.URLError as e:
            raise EndpointError(0, f"endpoint {self.name} at {self.url} not reachable: {e.reason}") from None

    def invoke(self, body: bytes | str, content_type: str = "text/csv", accept: str = "application/json",
               timeout: float = 30.0) -> Any:
        """The model's answer to ``body``: decoded JSON (e.g. ``{"predictions": [...]}``) when the
        endpoint answers JSON, else the text."""
        out, ctype = self.call(body, content_type, accept, timeout)
        return json.loads(out) if ctype.split(";")[0].strip() == "application/json" else out.decode()

    def stop(self) -> bool:
        """Stop the server and forget the endpoint; False if it was not running."""
        stopped = stop(self.pid)
        self.registry.delete_endpoint(self.name)
        return stopped


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")


def _host_allowed(host: str | None) -> bool:
    """A loopback name in the Host header (any port): a web page that reached us through DNS
    rebinding carries its own domain there."""
    if not host:
        return False
    name = host.strip().lower()
    if name.startswith("["):
        name = name[: name.find("]") + 1]
    elif name.count(":") == 1:
        name = name.split(":")[0]
    return name in LOOPBACK_NAMES


class _Deadline:
    """The socket's file, with one deadline for everything read through it: a client that
    sends a byte now and then (slowloris) still runs out of time."""

    def __init__(self, raw, sock: socket.socket) -> None:
        self.raw, self.sock, self.until = raw, sock, 0.0

    def start(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    def _arm(self) -> None:
        left = self.until - time.monotonic()
        if left <= 0:
            raise TimeoutError("read deadline passed")
        self.sock.settimeout(left)

    # the socket timeout bounds one recv: so each recv is armed with what is left of the deadline
    def readline(self, limit: int = -1) -> bytes:
        out = bytearray()
        while limit < 0 or len(out) < limit:
            self._arm()
            data = self.raw.peek(1)  # what is buffered, or one recv
            if not data:
                break
            end = data.find(b"\n") + 1 or len(data)
            if limit >= 0:
                end = min(end, limit - len(out))
            out += self.raw.read(end)  # buffered already: no recv
            if out.endswith(b"\n"):
                break
        return bytes(out)

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            raise ValueError("read to end of stream is not bounded")
        out = bytearray()
        while len(out) < n:
            self._arm()
            chunk = self.raw.read1(n - len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


@dataclass(frozen=True)
class Limits:
    """What one server accepts: headers within ``header_timeout`` seconds (also the keep-alive
    idle time), a body within ``body_timeout``, at most ``max_bytes`` per payload and
    ``max_connections`` at once; Host must be a loopback name unless ``allow_remote``."""

    max_bytes: int = MAX_BYTES
    max_connections: int = 64
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    allow_remote: bool = False


class _Server(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` of them: past that a client is
    told 503 at once instead of queueing behind a slow one."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], model: Model, limits: Limits) -> None:
        super().__init__(address, _Handler)
        self.model, self.limits = model, limits
        self.slots = threading.BoundedSemaphore(limits.max_connections)
        self.busy = 0  # requests being answered (read, not yet written)
        self.busy_lock = threading.Lock()

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            body = b'{"error": "too many connections: try again"}'
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def drain(self, seconds: float) -> None:
        """Wait (up to ``seconds``) until no request is being answered (idle keep-alive
        connections are not waited for)."""
        deadline = time.monotonic() + seconds
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.01)


class _Handler(BaseHTTPRequestHandler):
    """One connection: deadlines, Host check, Content-Length rules, then the model."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = _Deadline(self.rfile, self.connection)

    def handle_one_request(self) -> None:
        self.rfile.start(self.server.limits.header_timeout)
        try:
            super().handle_one_request()
        except (TimeoutError, OSError):  # too slow, or gone: drop the connection quietly
            self.close_connection = True

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:  # a request has arrived: the server waits for its answer before it exits
            with self.server.busy_lock:
                self.server.busy += 1
            self._counted = True
        return ok

    def finish(self) -> None:
        self._done()
        super().finish()

    def _done(self) -> None:
        if getattr(self, "_counted", False):
            self._counted = False
            with self.server.busy_lock:
                self.server.busy -= 1

    def log_message(self, fmt: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), fmt % args)

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")  # headers and body in one write (no Nagle wait)
        self._headers_buffer.append(body)
        self.flush_headers()
        self._done()

    def _error(self, code: int, message: str) -> None:
        self._send(code, json.dumps({"error": message}).encode())

    def _refused_host(self) -> bool:
        for name in ("Host", "Content-Length"):  # given twice, proxies and this server could disagree
            if len(self.headers.get_all(name) or []) > 1:
                self.close_connection = True
                self._error(400, f"{name} given more than once")
                return True
        if self.server.limits.allow_remote or _host_allowed(self.headers.get("Host")):
            return False
        self.close_connection = True
        self._error(403, f"Host {self.headers.get('Host')!r} is not this machine (use --allow-remote to serve"
                         " other names)")
        return True

    def do_GET(self) -> None:
        if self._refused_host():
            return
        if self.path == "/ping":
            self._send(200, b"{}")
        else:
            self._error(404, f"no route {self.path} (GET /ping, POST /invocations)")

    def do_POST(self) -> None:
        if self._refused_host():
            return
        if self.path != "/invocations":
            self.close_connection = True  # the body is not read
            self._error(404, f"no route {self.path} (GET /ping, POST /invocations)")
            return
        body = self._body()
        if body is not None:
            self._invoke(body)

    def _body(self) -> bytes | None:
        """The request body, or None after answering why not (4xx)."""
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length is None:
            self.close_connection = True
            self._error(411, "Content-Length is required (chunked bodies are not accepted)")
            return None
        if not length.strip().isdigit():
            self.close_connection = True
            self._error(400, f"Content-Length must be a non-negative integer, got {length!r}")
            return None
        n = int(length)
        if n > self.server.limits.max_bytes:
            self.close_connection = True
            self._drain(n)
            self._error(413, f"payload of {n} bytes exceeds the limit of {self.server.limits.max_bytes} bytes")
            return None
        self.rfile.start(self.server.limits.body_timeout)
        body = self.rfile.read(n)
        if len(body) < n:
            raise TimeoutError("body shorter than Content-Length")
        return body

    def _drain(self, n: int) -> None:
        # a moderately oversized body is read so the client sees the answer, not a reset
        left = n if n <= 16 * self.server.limits.max_bytes else 0
        self.rfile.start(self.server.limits.body_timeout)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)

    def _invoke(self, body: bytes) -> None:
        ctype = self.headers.get("Content-Type", "")
        accept = self.headers.get("Accept", "application/json")
        if accept in ("*/*", ""):
            accept = "application/json"
        types = (self.server.model.record.get("InferenceSpecification") or {}).get("SupportedContentTypes")
        if types and ctype.split(";")[0].strip() not in types:
            self._error(415, f"unsupported content type {ctype!r} (supported: {', '.join(types)})")
            return
        try:
            out, out_type = self.server.model.invoke(body, ctype, accept)
        except ValueError as e:  # the handlers' way to reject a payload
            self._error(415 if "content type" in str(e) else 400, str(e))
            return
        except RecursionError:  # a payload nested deeper than any parser should follow
            self._error(400, "payload nested too deeply")
            return
        except Exception as e:
            log.exception("invocation failed")
            self._error(500, f"model error: {type(e).__name__}")
            return
        self._send(200, out, out_type)


def make_server(model: Model, host: str = "127.0.0.1", port: int = 0, max_bytes: int = MAX_BYTES, *,
                allow_remote: bool = False, max_connections: int = 64, header_timeout: float = 10.0,
                body_timeout: float = 30.0) -> ThreadingHTTPServer:
    """The HTTP server for ``model`` on ``host:port`` within the given :class:`Limits`."""
    limits = Limits(max_bytes, max_connections, header_timeout, body_timeout, allow_remote)
    return _Server((host, port), model, limits)


def serve(home: Path, ref: str, host: str = "127.0.0.1", port: int = 8080, ready_file: Path | None = None,
          max_bytes: int = MAX_BYTES, *, allow_remote: bool = False, max_connections: int = 64) -> None:
    """Load ``ref`` and serve until SIGTERM / Ctrl-C."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before the model's libraries start OpenMP
    registry = Registry(home)
    work = Path(tempfile.mkdtemp(prefix="mlprep-endpoint-"))
    try:
        model = Model(registry, ref, work)
        server = make_server(model, host, port, max_bytes, allow_remote=allow_remote,
                             max_connections=max_connections)
        url = f"http://{host}:{server.server_address[1]}"
        log.info("serving %s at %s", model.record.get("Name"), url)
        if ready_file:
            tmp = ready_file.with_name(ready_file.name + ".tmp")
            tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "model": model.record.get("Name")}))
            tmp.replace(ready_file)
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
        print(url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
        server.server_close()
        server.drain(DRAIN)  # the requests in flight are answered before the process goes
    finally:
        shutil.rmtree(work, ignore_errors=True)


def start_background(home: Path, ref: str, log_path: Path, host: str = "127.0.0.1",
                     timeout: float = 60.0) -> dict:
    """Start ``mlprep endpoint serve`` detached; returns {url, pid} once it answers."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ready = log_path.with_suffix(".ready.json")
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "mlprep", "endpoint", "serve", ref, "--home", str(home), "--host", host,
           "--port", "0", "--ready-file", str(ready)]
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            return json.loads(ready.read_text())
        if proc.poll() is not None:
            raise RuntimeError(f"endpoint server exited with code {proc.returncode}: see {log_path}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"endpoint server not ready after {timeout:g} s: see {log_path}")


def stop(pid: int) -> bool:
    """Stop a background endpoint server; False if it was not running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    for _ in range(100):
        try:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
