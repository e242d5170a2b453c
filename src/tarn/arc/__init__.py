"""Arc jobs and notebooks: parsing into frozen stage models.

``load_arc_job(path, variables)`` reads a ``.conf``/``.json`` (HOCON) job or an ``.ipynb`` notebook into an
:class:`ArcJob`; ``filter_environment(job, env)`` keeps the stages that run in one environment. Running the
stages is not done here: the pipelines layer maps them to Tarn stages.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tarn.arc.hocon import load_hocon_job, parse_hocon_job
from tarn.arc.notebook import load_notebook_job, parse_notebook
from tarn.arc.params import apply_sql_params, sql_placeholders
from tarn.arc.schema import ArcField, load_arc_schema
from tarn.arc.stages import STAGE_TYPES, ArcJob, ArcStage, parse_stage
from tarn.errors import ConfigError, did_you_mean

__all__ = [
    "JOB_SUFFIXES",
    "STAGE_TYPES",
    "ArcField",
    "ArcJob",
    "ArcStage",
    "apply_sql_params",
    "filter_environment",
    "load_arc_job",
    "load_arc_schema",
    "load_hocon_job",
    "load_notebook_job",
    "parse_hocon_job",
    "parse_notebook",
    "parse_stage",
    "sql_placeholders",
]

JOB_SUFFIXES = (".json", ".conf", ".ipynb")


def load_arc_job(path: str | Path, variables: Mapping[str, str] | None = None) -> ArcJob:
    """Read an Arc job (``.json``/``.conf``) or notebook (``.ipynb``).

    ``variables`` are the command line's ``--NAME=value``; they win over ``%env`` cells and the environment.
    """
    source = Path(path)
    suffix = source.suffix.lower()
    if suffix == ".ipynb":
        return load_notebook_job(source, variables)
    if suffix in (".json", ".conf"):
        return load_hocon_job(source, variables)
    raise ConfigError(
        f"{str(source)!r} is not an Arc job: unknown suffix {suffix or '(none)'!r}{did_you_mean(suffix, JOB_SUFFIXES)}",
        hint="Arc jobs are .conf or .json (HOCON) files, or .ipynb notebooks",
    )


def filter_environment(job: ArcJob, environment: str) -> ArcJob:
    """The job with only the stages that run in ``environment``.

    A stage without ``environments`` runs in every environment.
    """
    stages = tuple(stage for stage in job.stages if stage.environments is None or environment in stage.environments)
    return job.model_copy(update={"stages": stages})
