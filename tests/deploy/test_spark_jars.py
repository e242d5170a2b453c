"""The image's s3a jars step (``python -m tarn.deploy.spark_jars``): version matching against pyspark's Hadoop, and
the download with its SHA-1 check against a Maven layout served on loopback."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tarn.deploy import spark_jars
from tarn.errors import ConfigError


@pytest.fixture
def maven(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Maven repository layout under a folder, served over HTTP on 127.0.0.1."""
    root = tmp_path / "repo"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _publish(root: Path, group: str, artifact: str, version: str, content: bytes, sha1: str | None = None) -> None:
    path = root / spark_jars.artifact_path(group, artifact, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    digest = sha1 or hashlib.sha1(content, usedforsecurity=False).hexdigest()
    path.with_name(path.name + ".sha1").write_text(f"{digest}  {path.name}\n")


def test_the_installed_pyspark_has_known_s3a_jars() -> None:
    pytest.importorskip("pyspark")
    jars = spark_jars.pyspark_jars_dir()
    version = spark_jars.hadoop_version(jars)
    artifacts = spark_jars.s3a_artifacts(version)
    assert artifacts[0] == ("org.apache.hadoop", "hadoop-aws", version) and len(artifacts) == 2


def test_download_puts_checked_jars_next_to_pysparks(maven: tuple[str, Path], tmp_path: Path) -> None:
    url, root = maven
    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / "hadoop-client-api-3.4.1.jar").write_bytes(b"api")
    _publish(root, "org.apache.hadoop", "hadoop-aws", "3.4.1", b"aws jar")
    _publish(root, "software.amazon.awssdk", "bundle", "2.24.6", b"sdk bundle" * 1000)
    added = spark_jars.download(url, jars)
    assert [p.name for p in added] == ["hadoop-aws-3.4.1.jar", "bundle-2.24.6.jar"]
    assert (jars / "bundle-2.24.6.jar").read_bytes() == b"sdk bundle" * 1000
    assert not list(jars.glob("*.part"))


def test_a_corrupt_download_is_refused(maven: tuple[str, Path], tmp_path: Path) -> None:
    url, root = maven
    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / "hadoop-client-api-3.3.4.jar").write_bytes(b"api")
    _publish(root, "org.apache.hadoop", "hadoop-aws", "3.3.4", b"tampered", sha1="0" * 40)
    with pytest.raises(ConfigError, match="does not match the repository's"):
        spark_jars.download(url, jars)
    assert sorted(p.name for p in jars.iterdir()) == ["hadoop-client-api-3.3.4.jar"]


def test_unknown_hadoop_versions_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no hadoop-client-api jar"):
        spark_jars.hadoop_version(tmp_path)
    with pytest.raises(ConfigError, match=r"no known AWS SDK bundle for Hadoop 9\.9\.9") as e:
        spark_jars.s3a_artifacts("9.9.9")
    assert "3.4.1" in (e.value.hint or "")
