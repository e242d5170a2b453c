"""One moto S3 server subprocess per test session, on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

REGION = "us-east-1"
_proc: subprocess.Popen[bytes] | None = None
_endpoint: str | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def endpoint() -> str:
    """Start the server (once) and return its endpoint URL."""
    global _proc, _endpoint
    if _endpoint is not None and _proc is not None and _proc.poll() is None:
        return _endpoint
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION)
    for _attempt in range(3):
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            except OSError:
                time.sleep(0.1)
                continue
            _proc, _endpoint = proc, url
            return url
        proc.kill()  # the port was taken meanwhile, or the server did not come up: try another
        proc.wait()
    raise RuntimeError("moto's S3 server did not start (is moto[server] installed?)")


def stop() -> None:
    global _proc, _endpoint
    if _proc is not None:
        _proc.terminate()
        try:
            _proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _proc.kill()
            _proc.wait()
    _proc, _endpoint = None, None
