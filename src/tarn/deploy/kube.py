"""Small Kubernetes / Argo helpers: object and template names, cron schedules, YAML output."""

from __future__ import annotations

import hashlib
import re
import zoneinfo
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import yaml

from tarn.errors import ConfigError, did_you_mean

# Argo's CronWorkflow names are at most 52 characters (a workflow name adds a timestamp suffix).
MAX_NAME = 52
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Descriptors Argo's cron library (robfig/cron) accepts besides five fields.
CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def dns_name(text: str) -> str:
    """``text`` as a DNS-1123 label: lower case, runs of other characters as one ``-``, no leading/trailing ``-``."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return out or "tarn"


def default_name(parts: Iterable[str]) -> str:
    """A resource name from ``parts``; shortened with a hash suffix when longer than Argo allows."""
    name = dns_name("-".join(parts))
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return name[: MAX_NAME - 9].rstrip("-") + "-" + digest


def check_name(name: str, what: str = "name") -> str:
    if len(name) > MAX_NAME or not _DNS_LABEL.match(name):
        raise ConfigError(
            f"{what} {name!r} is not a valid Argo resource name",
            hint=f"use lower-case letters, digits and '-', starting and ending with a letter or digit, "
            f"at most {MAX_NAME} characters",
        )
    return name


def check_env_name(name: str) -> str:
    if not _ENV_NAME.match(name):
        raise ConfigError(f"{name!r} is not a valid environment variable name", hint="use letters, digits and '_'")
    return name


def check_cron(schedule: str) -> str:
    """A schedule Argo accepts: five cron fields (minute hour day-of-month month day-of-week) or a descriptor
    such as ``@daily``. Raises :class:`ConfigError` naming the problem."""
    from cronsim import CronSim, CronSimError

    expr = " ".join(schedule.split())
    if expr in CRON_DESCRIPTORS:
        return expr
    hint = "five fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * *', or @daily / @hourly"
    if expr.startswith("@"):
        raise ConfigError(
            f"cron schedule {schedule!r}: unknown descriptor{did_you_mean(expr, CRON_DESCRIPTORS)}",
            hint=f"use {', '.join(CRON_DESCRIPTORS)}",
        )
    if len(expr.split()) != 5:
        raise ConfigError(f"cron schedule {schedule!r} must have 5 fields, not {len(expr.split())}", hint=hint)
    if any(ch in expr for ch in "LW#"):
        raise ConfigError(f"cron schedule {schedule!r}: 'L', 'W' and '#' are not supported by Argo's cron", hint=hint)
    try:
        CronSim(expr, datetime.now(UTC))
    except CronSimError as e:
        raise ConfigError(f"cron schedule {schedule!r} is not valid: {e}", hint=hint) from None
    return expr


def check_timezone(tz: str) -> str:
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {tz!r}", hint="use an IANA name such as 'UTC' or 'Europe/Amsterdam'"
        ) from None
    return tz


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (files in a ConfigMap) as literal blocks; no anchors and aliases (kubectl reads them,
    people and some tools do not)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def to_yaml(doc: Any) -> str:
    text: str = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
    return text


def to_yaml_documents(docs: Iterable[Any]) -> str:
    return "---\n".join(to_yaml(d) for d in docs)
