"""A local endpoint with the SageMaker inference contract: ``GET /ping`` and ``POST
/invocations``, answered by the model's own ``model_fn`` / ``input_fn`` / ``predict_fn`` /
``output_fn`` (from the ``SAGEMAKER_SUBMIT_DIRECTORY`` archive, ``SAGEMAKER_PROGRAM``).

Binds to 127.0.0.1 unless told otherwise; one thread per request; bodies over ``max_bytes``
(SageMaker's real-time limit is 6 MB) get 413; a payload the handlers reject (``ValueError``)
gets 400 with the message; an unsupported content type 415; anything else 500 without a
traceback (it goes to the log).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

from mlprep.pipeline.registry import Registry

log = logging.getLogger("mlprep.endpoint")
MAX_BYTES = 6 * 1024 * 1024


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
    if not path.is_file():
        raise FileNotFoundError(f"inference program {path.name} is not in the code archive")
    spec = importlib.util.spec_from_file_location(f"mlprep_inference_{abs(hash(str(path)))}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
    return mod


def make_server(model: Model, host: str = "127.0.0.1", port: int = 0,
                max_bytes: int = MAX_BYTES) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), fmt % args)

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, code: int, message: str) -> None:
            self._send(code, json.dumps({"error": message}).encode())

        def do_GET(self) -> None:
            if self.path == "/ping":
                self._send(200, b"{}")
            else:
                self._error(404, f"no route {self.path} (GET /ping, POST /invocations)")

        def do_POST(self) -> None:
            if self.path != "/invocations":
                self._error(404, f"no route {self.path} (GET /ping, POST /invocations)")
                return
            try:
                n = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._error(411, "Content-Length is required")
                return
            if n > max_bytes:
                # drain a moderately oversized body so the client reads the answer, not a reset
                left = n if n <= 16 * max_bytes else 0
                while left > 0:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    left -= len(chunk)
                self.close_connection = True
                self._error(413, f"payload of {n} bytes exceeds the limit of {max_bytes} bytes")
                return
            body = self.rfile.read(n)
            ctype = self.headers.get("Content-Type", "")
            accept = self.headers.get("Accept", "application/json")
            if accept in ("*/*", ""):
                accept = "application/json"
            types = (model.record.get("InferenceSpecification") or {}).get("SupportedContentTypes")
            if types and ctype.split(";")[0].strip() not in types:
                self._error(415, f"unsupported content type {ctype!r} (supported: {', '.join(types)})")
                return
            try:
                out, out_type = model.invoke(body, ctype, accept)
            except ValueError as e:  # the handlers' way to reject a payload
                code = 415 if "content type" in str(e) else 400
                self._error(code, str(e))
                return
            except Exception as e:
                log.exception("invocation failed")
                self._error(500, f"model error: {type(e).__name__}")
                return
            self._send(200, out, out_type)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve(home: Path, ref: str, host: str = "127.0.0.1", port: int = 8080, ready_file: Path | None = None,
          max_bytes: int = MAX_BYTES) -> None:
    """Load ``ref`` and serve until SIGTERM / Ctrl-C."""
    registry = Registry(home)
    work = Path(tempfile.mkdtemp(prefix="mlprep-endpoint-"))
    try:
        model = Model(registry, ref, work)
        server = make_server(model, host, port, max_bytes)
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
