"""Shared fixtures: sample data, a real moto S3/Glue server on 127.0.0.1, SQL servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlprep.datasets.payments import generate

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "conf" / "batch" / "transactions.yaml"
os.environ.setdefault("MLPREP_PROGRESS", "0")


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("data"), rows=3000, seed=11)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server():
    """moto in server mode, as a separate process on 127.0.0.1 (not in-process patching)."""
    port = _free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("moto_server did not start")
    env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield url
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.kill()  # the server process itself, by PID
    proc.wait(10)


@pytest.fixture
def s3_bucket(moto_server):
    import uuid

    import boto3

    name = f"b-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=name)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    return name


PG_URL = os.environ.get("MLPREP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("MLPREP_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")
