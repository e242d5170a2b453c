"""What a pipeline run needs from the lake, as a small value (built from a ``Lake`` in :mod:`tarn.pipelines.api`),
and the run's options, result and failure."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tarn.config.engine import EngineSpec
from tarn.errors import TarnError
from tarn.metastore.catalog import AuditRepo, CatalogRepo
from tarn.metastore.runs import RunRepo
from tarn.pipelines.spec import ParamValue
from tarn.storage.base import Storage


@dataclass(frozen=True)
class LakeAccess:
    """The parts of a lake a run touches."""

    project_dir: Path
    table_uri: Callable[[str, str], str]  # (zone, table) → location
    runs: RunRepo
    principal: str
    catalog: CatalogRepo | None = None
    audit: AuditRepo | None = None
    engine_threads: int | None = None
    engine_memory_limit: str | None = None
    engine: EngineSpec = field(default_factory=EngineSpec)  # the project's engine (a pipeline may choose its own)
    storage: Storage | None = None  # the lake root's: file outputs and table removal on an object store

    def known_tables(self) -> list[str]:
        return [t["name"] for t in self.catalog.tables()] if self.catalog is not None else []


@dataclass(frozen=True)
class RunOptions:
    env: str | None = None
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    trigger: str = "manual"
    run_id: str | None = None  # resume this run (it crashed while running)
    kind: str = "pipeline"  # pipeline | arc
    batch_rows: int = 131072
    count_rows: bool = True  # rows out of every view (one extra count per view)
    param_env: Mapping[str, str] | None = None  # TARN_PARAM_* source; default os.environ


@dataclass(frozen=True)
class RunResult:
    run_id: str
    pipeline: str
    state: str
    strategy: str
    error: str | None = None
    error_stage: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.state == "succeeded"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class StageFailed(TarnError):
    """A stage failed the run on purpose (a gate: validate, expect 'fail', equal, typing failfast)."""

    def __init__(self, stage: str, message: str, *, detail: Any = None, hint: str | None = None) -> None:
        super().__init__(f"stage {stage!r}: {message}", hint=hint)
        self.stage = stage
        self.detail = detail
