"""The local endpoint under hostile clients: bad lengths, slow clients, too many connections,
payloads that are not numbers, a Host header from elsewhere (DNS rebinding). Each gets a quick
4xx/5xx or a closed connection, and the server goes on serving."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from mlprep.pipeline import serve
from mlprep.pipeline.registry import Registry
from tests.conftest import ROOT


def _bench_module():
    """bench/endpoint.py's model (fraud-sized, fraud handlers), loaded without touching sys.path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_endpoint", ROOT / "bench" / "endpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench_endpoint = _bench_module()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    home = tmp_path_factory.mktemp("ep")
    ref, _, rows = bench_endpoint.build_model(home)
    return serve.Model(Registry(home), ref, home / "work"), rows


@pytest.fixture
def server(model):
    servers = []

    def start(**kw):
        s = serve.make_server(model[0], "127.0.0.1", 0, **kw)
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
        return s.server_address[1]

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _raw(port: int, data: bytes, wait: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as c:
        c.sendall(data)
        out = b""
        while True:
            try:
                chunk = c.recv(65536)
            except TimeoutError:
                return out
            if not chunk:
                return out
            out += chunk


def _post(port: int, body: bytes, ctype: str = "text/csv", host: str | None = None) -> tuple[int, dict]:
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": ctype, "Accept": "application/json"}
    if host is not None:
        con.putrequest("POST", "/invocations", skip_host=True)
        con.putheader("Host", host)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            con.putheader(k, v)
        con.endheaders(body)
    else:
        con.request("POST", "/invocations", body, headers)
    r = con.getresponse()
    data = json.loads(r.read() or b"{}")
    con.close()
    return r.status, data


def _row(rows, i=0) -> bytes:
    return ",".join(f"{v:.6f}" for v in rows[i]).encode()


def test_bad_content_lengths_are_answered_at_once(server, model):
    port = server()
    t = time.monotonic()
    for length, code in ((b"-1", b"400"), (b"abc", b"400"), (b"1e3", b"400")):
        out = _raw(port, b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\n"
                   b"Content-Length: " + length + b"\r\n\r\n1,2")
        assert out.startswith(b"HTTP/1.1 " + code), out[:80]
    out = _raw(port, b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 411")
    assert time.monotonic() - t < 5
    assert _post(port, _row(model[1]))[0] == 200


def test_slow_clients_are_cut_off_and_connections_are_bounded(server, model):
    port = server(header_timeout=1.0, body_timeout=1.0, max_connections=4)
    # slowloris: a header byte now and then never completes the request
    slow = []
    for _ in range(10):
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow.append(c)
    # past max_connections: refused with 503 at once, not queued
    assert any(_raw(port, b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 5).startswith(b"HTTP/1.1 503")
               for _ in range(3))
    t = time.monotonic()
    for c in slow:
        for _ in range(3):
            try:
                c.sendall(b"X")
            except OSError:
                break
            time.sleep(0.3)
    # every slow connection is closed by the server: the first four at their header deadline, the
    # others at once with a 503
    answers = []
    for c in slow:
        c.settimeout(5)
        got = b""
        try:
            while chunk := c.recv(4096):
                got += chunk
        except ConnectionResetError:
            pass
        answers.append(got[:12])
        c.close()
    assert time.monotonic() - t < 8
    assert answers.count(b"") == 4 and answers.count(b"HTTP/1.1 503") == 6
    # a body that does not arrive in time: the connection goes, the server stays
    out = _raw(port, b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\n"
               b"Content-Length: 100\r\n\r\n1,2", wait=5)
    assert out == b""
    time.sleep(0.2)
    assert _post(port, _row(model[1]))[0] == 200


def _drip(c: socket.socket, head: bytes, seconds: float) -> tuple[bytes, float]:
    """Send ``head``, then a byte every 0.3 s for ``seconds``; what came back, and when the
    server closed the connection (seconds after the head)."""
    c.sendall(head)
    t = time.monotonic()
    while time.monotonic() - t < seconds:
        time.sleep(0.3)
        try:
            c.sendall(b"1")
        except OSError:
            break
    c.settimeout(5)
    got = b""
    try:
        while chunk := c.recv(4096):
            got += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return got, time.monotonic() - t


def test_a_drip_fed_header_line_or_body_runs_out_of_time(server, model):
    """Each recv is armed with what is left of the deadline: a byte every 0.3 s does not keep a
    header line or a body alive past its deadline (before: each byte reset the timeout)."""
    port = server(header_timeout=1.0, body_timeout=1.0)
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    got, took = _drip(c, b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", 4.0)
    c.close()
    assert got == b"" and took < 4.0
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    got, took = _drip(c, b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\n"
                         b"Content-Length: 40\r\n\r\n", 4.0)
    c.close()
    assert b"200 OK" not in got and took < 4.0
    assert _post(port, _row(model[1]))[0] == 200


@pytest.mark.parametrize("body,ctype,message", [
    (b"0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25\n1,2", "text/csv", "row 2 has 2 values"),
    (b"nan" + b",1" * 25, "text/csv", "not a finite number: 'nan'"),
    (b"1O" + b",1" * 25, "text/csv", "row 1, column 1: not a number: '1O'"),  # not a header row
    (b"inf" + b",1" * 25, "text/csv", "not a finite number: 'inf'"),
    (b"1e400" + b",1" * 25, "text/csv", "not a finite number: '1e400'"),
    (b"1" + b",1" * 25 + b"\nabc" + b",1" * 25, "text/csv", "row 2, column 1: not a number: 'abc'"),
    (b'{"instances": [{"f00": NaN}]}', "application/json", "NaN is not a JSON number"),
    (b'{"instances": [{"f00": 1e400}]}', "application/json", "number out of range"),
    (b'{"instances": [{"f00": "x"}]}', "application/json", "not a number"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", "nested too deeply"),
])
def test_payloads_that_are_not_finite_numbers_are_400(server, model, body, ctype, message):
    port = server()
    code, data = _post(port, body, ctype)
    assert code == 400 and message in data["error"], data
    assert _post(port, _row(model[1]))[0] == 200


def test_an_empty_cell_is_a_missing_value_and_predictions_match_the_model(server, model):
    port = server()
    m, rows = model
    code, data = _post(port, b"\n".join(_row(rows, i) for i in range(5)))
    assert code == 200 and len(data["predictions"]) == 5
    import pandas as pd

    frame = pd.DataFrame([[float(v) for v in _row(rows, i).split(b",")] for i in range(5)],
                         columns=bench_endpoint.FEATURES)
    assert data["predictions"] == pytest.approx(m.model["model"].predict_proba(frame)[:, 1].tolist(), abs=1e-12)
    code, data = _post(port, b"," + b",".join(_row(rows).split(b",")[1:]))
    assert code == 200 and 0 <= data["predictions"][0] <= 1


@pytest.mark.parametrize("host,ok", [("localhost", True), ("127.0.0.1:{port}", True), ("[::1]:{port}", True),
                                     ("localhost:{port}", True), ("evil.example", False),
                                     ("evil.example:{port}", False), ("127.0.0.1.evil.example", False), ("", False)])
def test_only_loopback_host_names_are_served(server, model, host, ok):
    port = server()
    code, data = _post(port, _row(model[1]), host=host.format(port=port))
    assert (code == 200) if ok else (code == 403 and "is not this machine" in data["error"])


def test_allow_remote_serves_any_host_name(server, model):
    port = server(allow_remote=True)
    assert _post(port, _row(model[1]), host="my-laptop.lan:8080")[0] == 200


def test_a_header_given_twice_is_refused(server, model):
    """Two Host headers (a loopback one first, to pass the check) or two Content-Lengths (a
    smuggling classic): 400, connection closed (before: the first one won)."""
    port = server()
    body = _row(model[1])
    for extra in (b"Host: evil.example\r\n", b"Content-Length: 1\r\n"):
        out = _raw(port, b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\n" + extra
                   + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert out.startswith(b"HTTP/1.1 400") and b"given more than once" in out, out[:120]
    assert _post(port, body)[0] == 200
