"""The ``engine`` section of ``tarn.yaml``: which SQL engine runs pipelines.

::

    engine:
      name: spark                     # duckdb (default) | spark
      master: "local[4]"              # local[N] | spark://host:7077 | sc://host:15002 (Spark Connect)
      conf: {spark.executor.memory: 4g}

A pipeline may choose its engine itself (``engine:`` in the pipeline file); the project's is the default.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_MASTER = re.compile(r"^(local(\[(\*|\d+)(,\s*\d+)?\])?|spark://\S+|sc://\S+|yarn|k8s://\S+)$")

EngineName = Literal["duckdb", "spark"]


class EngineSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: EngineName = "duckdb"
    master: str = Field(
        default="local[*]",
        description="Spark master: local[N], spark://host:port, sc://host:port (Spark Connect), yarn, k8s://…",
    )
    conf: dict[str, str] = Field(default_factory=dict, description="Spark settings (spark.* keys), as strings")

    @field_validator("master")
    @classmethod
    def _master(cls, v: str) -> str:
        if not _MASTER.match(v.strip()):
            raise ValueError(
                f"engine master {v!r} is not a Spark master URL (local[N], spark://host:port, sc://host:port, "
                "yarn, k8s://…)"
            )
        return v.strip()

    @field_validator("conf", mode="before")
    @classmethod
    def _conf(cls, v: object) -> object:
        if isinstance(v, dict):
            return {str(k): str(x).lower() if isinstance(x, bool) else str(x) for k, x in v.items()}
        return v
