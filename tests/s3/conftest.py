"""A real S3 API server on loopback for the S3 tests: moto's server, started once per session.

It runs in a subprocess, not as moto's in-process ``ThreadedMotoServer``: delta-rs holds the GIL
in some calls (``DeltaTable.is_deltatable``) while it waits for the server's answer, so a server
thread in the same interpreter never gets to answer (measured: a hang). Every test gets its own
bucket and AWS_* variables pointing at the server; no real AWS account is ever reached.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.s3 import s3server
from tests.s3.s3server import REGION


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The endpoint URL of a moto S3 server running for the whole session (one server, whichever
    test folder asks first)."""
    yield s3server.endpoint()
    s3server.stop()


@pytest.fixture
def aws_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """AWS_* variables for the test server only (no profile, no real credentials file)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return s3_endpoint


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION)


@pytest.fixture
def bucket(aws_env: str) -> str:
    """A new, empty bucket on the test server."""
    name = f"tarn-test-{uuid.uuid4().hex[:12]}"
    s3_client(aws_env).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3(aws_env: str) -> Any:
    """A boto3 client on the test server (to land objects and look at them)."""
    return s3_client(aws_env)


def s3_settings(endpoint: str, **extra: Any) -> dict[str, Any]:
    """The ``lake.s3`` section of tarn.yaml for the test server."""
    return {"endpoint_url": endpoint, "region": REGION, "allow_http": True, **extra}


def write_s3_project(
    directory: Path,
    endpoint: str,
    bucket: str,
    datasets: list[dict[str, Any]],
    *,
    prefix: str = "lake",
    s3: dict[str, Any] | None = None,
    ingest: dict[str, Any] | None = None,
) -> Path:
    from tests.conftest import FAST_INGEST

    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": "s3_lake",
        "lake": {"root": f"s3://{bucket}/{prefix}", "s3": s3_settings(endpoint, **(s3 or {}))},
        "ingest": {**FAST_INGEST, "scan_interval_seconds": 0.3, **(ingest or {})},
        "datasets": datasets,
    }
    (directory / "tarn.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory
