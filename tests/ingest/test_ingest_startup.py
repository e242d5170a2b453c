"""What ``tarn ingest`` costs before and around the work: the command imports neither the pipeline stack
(sqlglot, the Arc parser) nor pandas, and the Arrow columns it adds to every batch are built from
buffers, equal to what ``pa.array`` / ``pa.repeat`` give."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tarn.ingest.checks import int64_array, repeat_string


@pytest.mark.parametrize("n", [0, 1, 5, 131_072])
def test_built_columns_equal_pyarrows_own(n: int) -> None:
    lines = np.arange(3, n + 3, dtype=np.int64)
    assert int64_array(lines).equals(pa.array(lines, pa.int64()))
    for value in ("4c887357208f476f8960", "é-ü", ""):
        built = repeat_string(value, n)
        assert built.type == pa.string() and built.equals(pa.repeat(value, n).cast(pa.string()))
        built.validate(full=True)


def test_ingest_imports_no_pipeline_stack_and_no_pandas(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "tarn.yaml").write_text("name: s\ndatasets:\n  - name: t\n")
    (tmp_path / "a.csv").write_text("id,v\n1,x\n2,y\n")
    script = textwrap.dedent(
        f"""
        import sys
        from tarn.cli.main import app  # main() ends with os._exit: the app itself, to look afterwards
        args = ["-p", {str(tmp_path / "p")!r}, "ingest", {str(tmp_path / "a.csv")!r}, "-d", "t"]
        code = app(args, standalone_mode=False)
        assert not code, code
        heavy = ("pandas", "sqlglot", "tarn.arc", "tarn.pipelines.api", "pyspark")
        heavy = sorted(m for m in heavy if m in sys.modules)
        print("HEAVY", heavy)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "committed" in proc.stdout
    assert "HEAVY []" in proc.stdout, proc.stdout
