"""The local endpoint (`mlprep endpoint serve`) against its floor, the model called in process.

    python bench/endpoint.py --requests 400 --out bench/results/endpoint.json

One run: a HistGradientBoosting fraud model on 26 features (the fraud pipeline's kind and size,
trained here on seeded data) is registered with the fraud pipeline's own inference handlers and
served; clients on keep-alive connections send one CSV row per request at concurrency 1, 8 and
32. Reported per level: requests/s, p50/p99 latency, and the server's CPU-seconds per request
(the machine is shared: CPU is the fair comparison). The floors, in this process: the handlers
(input_fn → predict_fn → output_fn) and bare predict_proba on the same row, with one thread.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import io
import json
import os
import platform
import statistics
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FEATURES = [f"f{i:02d}" for i in range(26)]


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_model(home: Path, seed: int = 7) -> tuple[str, object, np.ndarray]:
    """Train, package and register a model like the fraud pipeline's; returns (ref, bundle, rows)."""
    import joblib
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier

    from mlprep.pipeline.registry import Registry
    from mlprep.pipeline.storage import Storage

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(20_000, len(FEATURES)))
    y = (x[:, 0] + 0.5 * x[:, 3] * x[:, 7] + rng.normal(scale=2, size=len(x)) > 2.5).astype(int)
    # fitted on a frame, as pipelines/fraud/train.py does: the model knows its feature names
    model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.05, random_state=seed).fit(
        pd.DataFrame(x, columns=FEATURES), y)
    bundle = {"model": model, "features": FEATURES}
    blob = io.BytesIO()
    joblib.dump(bundle, blob)
    storage = Storage(root=home / "s3")
    storage.put_bytes("s3://bench/model.tar.gz", _tar({"model.joblib": blob.getvalue()}))
    code = (ROOT / "pipelines" / "fraud" / "inference.py").read_bytes()
    storage.put_bytes("s3://bench/code.tar.gz", _tar({"inference.py": code}))
    rec = Registry(home).create_model_package(storage, {
        "ModelPackageGroupName": "bench-models", "ModelApprovalStatus": "Approved",
        "InferenceSpecification": {"SupportedContentTypes": ["text/csv", "application/json"], "Containers": [{
            "Image": "local", "ModelDataUrl": "s3://bench/model.tar.gz",
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "s3://bench/code.tar.gz"}}]}})
    return rec["Name"], bundle, x[:1000]


def _percentiles(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50_ms": round(q[49], 2), "p99_ms": round(q[98], 2)}


def _inference() -> ModuleType:
    """The fraud pipeline's inference handlers, loaded by path (sys.path untouched)."""
    spec = importlib.util.spec_from_file_location("bench_fraud_inference", ROOT / "pipelines" / "fraud" / "inference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def floors(bundle, rows: np.ndarray, n: int) -> dict:
    import pandas as pd
    from threadpoolctl import threadpool_limits

    inference = _inference()

    bodies = [",".join(f"{v:.6f}" for v in r).encode() for r in rows]
    out = {}
    with threadpool_limits(1):
        frames = [pd.DataFrame(r[None, :], columns=FEATURES) for r in rows]
        for name, call in (("predict_proba", lambda i: bundle["model"].predict_proba(frames[i % len(frames)])),
                           ("handlers", lambda i: inference.output_fn(inference.predict_fn(
                               inference.input_fn(bodies[i % len(bodies)], "text/csv"), bundle), "application/json"))):
            for i in range(20):
                call(i)
            ms, cpu0 = [], time.process_time()
            for i in range(n):
                t = time.perf_counter()
                call(i)
                ms.append((time.perf_counter() - t) * 1000)
            out[name] = {**_percentiles(ms), "cpu_ms_per_call": round((time.process_time() - cpu0) * 1000 / n, 3)}
    return out


def load(url: str, bodies: list[bytes], concurrency: int, total: int) -> dict:
    host, port = url.split("//")[1].split(":")
    lat: list[float] = []
    errors = []
    lock = threading.Lock()
    per = max(1, total // concurrency)

    def client(k: int) -> None:
        con = http.client.HTTPConnection(host, int(port), timeout=60)
        mine = []
        for i in range(per):
            body = bodies[(k * per + i) % len(bodies)]
            t = time.perf_counter()
            try:
                con.request("POST", "/invocations", body, {"Content-Type": "text/csv", "Accept": "application/json"})
                r = con.getresponse()
                data = r.read()
            except OSError as e:  # refused or reset: a failed request, counted, not lost
                errors.append(repr(e))
                con.close()
                con = http.client.HTTPConnection(host, int(port), timeout=60)
                continue
            mine.append((time.perf_counter() - t) * 1000)
            if r.status != 200:
                errors.append(data[:200])
        con.close()
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    return {"concurrency": concurrency, "requests": len(lat), "failed": len(errors),
            "requests_per_s": round(len(lat) / wall, 1), **_percentiles(lat)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "endpoint.json"))
    a = ap.parse_args()
    import psutil

    from mlprep.pipeline import serve

    with tempfile.TemporaryDirectory(prefix="bench-endpoint-") as tmp:
        home = Path(tmp)
        ref, bundle, rows = build_model(home)
        bodies = [",".join(f"{v:.6f}" for v in r).encode() for r in rows]
        info = serve.start_background(home, ref, home / "serve.log")
        proc = psutil.Process(info["pid"])
        try:
            load(info["url"], bodies, 1, 50)  # warm up
            levels = []
            for c in (1, 8, 32):
                cpu0 = sum(proc.cpu_times()[:2])
                r = load(info["url"], bodies, c, a.requests)
                r["server_cpu_ms_per_request"] = round((sum(proc.cpu_times()[:2]) - cpu0) * 1000 / r["requests"], 3)
                levels.append(r)
                print(json.dumps(r), file=sys.stderr)
        finally:
            serve.stop(info["pid"])
        floor = floors(bundle, rows, a.requests)
    c1 = levels[0]
    result = {
        "benchmark": "endpoint", "model": "HistGradientBoostingClassifier(max_iter=100), 26 features, one CSV row",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "levels": levels, "floor": floor,
        "ratios": {"server_cpu_per_request_vs_handlers_cpu": round(
                       c1["server_cpu_ms_per_request"] / floor["handlers"]["cpu_ms_per_call"], 2),
                   "p50_c1_vs_handlers_p50": round(c1["p50_ms"] / floor["handlers"]["p50_ms"], 2)},
    }
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
