"""A real `mlflow server` on 127.0.0.1 for the tests that log to MLflow."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from apoe_assets_tests.processes import stop_group

STARTUP_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """`mlflow server` (one uvicorn worker, SQLite backend and artifacts under ``root``) on a
    free port; yields its URL once /health answers, stops it on exit."""
    port = free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    log = (root / "server.log").open("w")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen(
        [str(mlflow_cli), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        import skops.io  # noqa: F401  (its first import, ~6 s, overlaps the server's start)

        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert process.poll() is None, (root / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (root / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        stop_group(process, 5)  # uvicorn waits for idle keep-alive clients otherwise
        log.close()
