"""The jars Spark needs to read and write an ``s3://`` lake (``s3a``): hadoop-aws of exactly the Hadoop version
pyspark bundles, and the AWS SDK bundle that Hadoop release was built against. pyspark's wheel has neither.

The Dockerfile runs ``python -m tarn.deploy.spark_jars`` at build time: it finds pyspark's Hadoop version, picks
the matching jars and downloads them from a Maven repository into pyspark's ``jars/`` folder, checking each
against the repository's SHA-1. (Nothing is downloaded at run time.)
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.request
from pathlib import Path

from tarn.errors import ConfigError, MissingExtraError

MAVEN_REPO = "https://repo1.maven.org/maven2"
# Hadoop release → the AWS SDK bundle its hadoop-aws was built with (Hadoop's pom: aws-java-sdk(-v2).version).
AWS_SDK: dict[str, tuple[str, str, str]] = {
    "3.3.4": ("com.amazonaws", "aws-java-sdk-bundle", "1.12.262"),  # pyspark 3.5
    "3.4.1": ("software.amazon.awssdk", "bundle", "2.24.6"),  # pyspark 4.0
}
_HADOOP_JAR = re.compile(r"^hadoop-client-api-(\d+\.\d+\.\d+)\.jar$")


def pyspark_jars_dir() -> Path:
    try:
        import pyspark
    except ImportError:
        raise MissingExtraError("the Spark engine's s3a jars", "spark", "pyspark") from None
    return Path(pyspark.__file__).parent / "jars"


def hadoop_version(jars: Path) -> str:
    for p in sorted(jars.iterdir()):
        m = _HADOOP_JAR.match(p.name)
        if m:
            return m.group(1)
    raise ConfigError(f"no hadoop-client-api jar in {jars}", hint="is this a pyspark installation?")


def s3a_artifacts(hadoop: str) -> list[tuple[str, str, str]]:
    """(group, artifact, version) of the jars s3a needs with Hadoop ``hadoop``."""
    if hadoop not in AWS_SDK:
        raise ConfigError(
            f"no known AWS SDK bundle for Hadoop {hadoop}",
            hint=f"known Hadoop releases: {', '.join(AWS_SDK)}; add the one from Hadoop's pom to AWS_SDK",
        )
    return [("org.apache.hadoop", "hadoop-aws", hadoop), AWS_SDK[hadoop]]


def artifact_path(group: str, artifact: str, version: str) -> str:
    return f"{group.replace('.', '/')}/{artifact}/{version}/{artifact}-{version}.jar"


def download(repo: str, jars: Path) -> list[Path]:
    out = []
    for group, artifact, version in s3a_artifacts(hadoop_version(jars)):
        url = f"{repo.rstrip('/')}/{artifact_path(group, artifact, version)}"
        target = jars / f"{artifact}-{version}.jar"
        with urllib.request.urlopen(url + ".sha1", timeout=60) as r:
            expected = r.read().decode().split()[0].strip()
        sha1 = hashlib.sha1(usedforsecurity=False)
        tmp = target.with_suffix(".part")
        with urllib.request.urlopen(url, timeout=600) as r, tmp.open("wb") as f:
            while chunk := r.read(1 << 20):
                sha1.update(chunk)
                f.write(chunk)
        if sha1.hexdigest() != expected:
            tmp.unlink()
            raise ConfigError(f"{url}: SHA-1 {sha1.hexdigest()} does not match the repository's {expected}")
        tmp.replace(target)
        out.append(target)
    return out


def main() -> None:
    repo = os.environ.get("MAVEN_REPO") or MAVEN_REPO
    for path in download(repo, pyspark_jars_dir()):
        sys.stdout.write(f"added {path}\n")


if __name__ == "__main__":
    main()
