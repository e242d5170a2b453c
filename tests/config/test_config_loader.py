"""tarn.yaml: validation with "did you mean" for unknown keys, ``${VAR}`` and ``${secret:NAME}``
substitution (secret values are collected for redaction, never shown), schema files, JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tarn.config.loader import find_project_dir, load_project, load_schema_file, parse_project
from tarn.config.spec import ProjectSpec
from tarn.config.types import arrow_type, normalize_type
from tarn.errors import ConfigError
from tarn.lake import Lake

SECRET = "s3cr3t-Value-91f2"


def _parse(text: str, env: dict[str, str] | None = None, where: str = "/p/tarn.yaml") -> ProjectSpec:
    spec, _ = parse_project(text, where=where, env=env or {})
    return spec


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("text", "location", "suggestion"),
    [
        ("naem: x\n", "naem", "name"),
        ("ingest:\n  setle_seconds: 1\n", "ingest.setle_seconds", "settle_seconds"),
        ("ingest:\n  backoff:\n    max_second: 3\n", "ingest.backoff.max_second", "max_seconds"),
        ("datasets:\n  - name: a\n    evolutoin: freeze\n", "datasets.0.evolutoin", "evolution"),
        ("datasets:\n  - name: a\n    csv: {delimeter: ';'}\n", "datasets.0.csv.delimeter", "delimiter"),
        ("datasets:\n  - name: a\n    columns:\n      - {name: x, nulable: false}\n", "nulable", "nullable"),
    ],
)
def test_unknown_keys_are_named_with_a_suggestion(text: str, location: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _parse(text)
    message = str(exc.value)
    assert "/p/tarn.yaml is invalid" in message
    assert location in message
    assert f"(did you mean {suggestion!r}?)" in message


def test_unknown_key_without_a_close_match_has_no_suggestion() -> None:
    with pytest.raises(ConfigError) as exc:
        _parse("zzzzzz: 1\n")
    assert "unknown key 'zzzzzz'" in str(exc.value)
    assert "did you mean" not in str(exc.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("datasets:\n  - name: a\n  - name: a\n", "duplicate dataset names"),
        ("datasets:\n  - name: Bad-Name\n", "lower_snake_case"),
        ("datasets:\n  - name: a\n    format: xml\n", "datasets.0.format"),
        ("datasets:\n  - name: a\n    evolution: sometimes\n", "datasets.0.evolution"),
        ("ingest:\n  workers: 0\n", "ingest.workers"),
        ("datasets:\n  - name: a\n    columns: [{name: x}]\n    primary_key: [y]\n", "'y'"),
        ("datasets:\n  - name: a\n    columns: [{name: x}]\n    schema_file: s.json\n", "either 'columns'"),
        ("- just\n- a list\n", "must be a YAML mapping"),
    ],
)
def test_invalid_projects_are_explained(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _parse(text)
    assert fragment in str(exc.value)


def test_unknown_column_type_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError, match=r"unknown column type 'strng' \(did you mean 'string'\?\)"):
        normalize_type("strng")
    assert normalize_type(" Decimal(10, 2) ") == "decimal(10,2)"
    assert str(arrow_type("decimal(10,2)")) == "decimal128(10, 2)"
    with pytest.raises(ConfigError, match="out of range"):
        normalize_type("decimal(50,2)")


def test_defaults_and_dataset_properties() -> None:
    spec = _parse("datasets:\n  - name: orders\n")
    ds = spec.datasets[0]
    assert (ds.landing_glob, ds.stage_table, ds.quarantine_table) == ("orders/**", "stage.orders", "quarantine.orders")
    assert (ds.format, ds.evolution) == ("auto", "evolve")
    assert spec.lake.root == "lake"
    with pytest.raises(Exception, match="frozen"):
        setattr(ds, "name", "other")  # noqa: B010


# ---------------------------------------------------------------------------- substitution


def test_variables_are_substituted_with_defaults() -> None:
    text = "name: ${PROJECT}\nlake:\n  root: ${LAKE_ROOT:-data/lake}\ningest:\n  workers: ${WORKERS:-3}\n"
    spec = _parse(text, env={"PROJECT": "shop", "WORKERS": "5"})
    assert (spec.name, spec.lake.root, spec.ingest.workers) == ("shop", "data/lake", 5)


def test_missing_variable_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError) as exc:
        _parse("name: ${NOT_SET_ANYWHERE}\n")
    assert "${NOT_SET_ANYWHERE} is not set" in str(exc.value)
    assert exc.value.hint is not None and "NOT_SET_ANYWHERE" in exc.value.hint
    assert "/p/tarn.yaml" in str(exc.value)


def test_secret_from_the_environment_is_substituted_and_recorded_for_redaction() -> None:
    text = "name: shop\ndatasets:\n  - name: a\n    description: 'token ${secret:API_TOKEN}'\n"
    spec, secrets = parse_project(text, where="tarn.yaml", env={"TARN_SECRET_API_TOKEN": SECRET})
    assert spec.datasets[0].description == f"token {SECRET}"
    assert SECRET in secrets.values
    assert secrets.redact(f"connecting with {SECRET} failed") == "connecting with *** failed"


def test_secret_from_a_secrets_file_and_environment_precedence(tmp_path: Path) -> None:
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump({"API_TOKEN": SECRET, "OTHER": "from-file"}))
    (tmp_path / "tarn.yaml").write_text(
        "secrets_file: secrets.yaml\ndatasets:\n"
        "  - name: a\n    description: '${secret:API_TOKEN}'\n"
        "  - name: b\n    description: '${secret:OTHER}'\n"
    )
    spec, secrets = load_project(tmp_path, env={"TARN_SECRET_OTHER": "from-env"})
    assert [d.description for d in spec.datasets] == [SECRET, "from-env"]
    assert secrets.values == {SECRET, "from-env"}


def test_secret_from_the_projects_hidden_secrets_file(tmp_path: Path) -> None:
    (tmp_path / ".tarn").mkdir()
    (tmp_path / ".tarn" / "secrets.yaml").write_text(f"KEY: {SECRET}\n")
    (tmp_path / "tarn.yaml").write_text("name: '${secret:KEY}'\n")
    spec, secrets = load_project(tmp_path, env={})
    assert spec.name == SECRET
    assert secrets.redact(spec.name) == "***"


def test_missing_secret_names_it_and_how_to_set_it() -> None:
    with pytest.raises(ConfigError) as exc:
        _parse("name: ${secret:DB_PASSWORD}\n")
    assert "secret 'DB_PASSWORD' is not set" in str(exc.value)
    assert exc.value.hint is not None and "TARN_SECRET_DB_PASSWORD" in exc.value.hint


def test_no_project_file_tells_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_project(tmp_path)
    assert "no tarn.yaml" in str(exc.value)
    assert "tarn init" in str(exc.value)
    with pytest.raises(ConfigError, match="tarn init"):
        find_project_dir(tmp_path)
    (tmp_path / "tarn.yaml").write_text("name: x\n")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert find_project_dir(nested) == tmp_path


# ----------------------------------------------------------------------------- schema files


def test_tarn_and_arc_schema_files(tmp_path: Path) -> None:
    tarn_schema = tmp_path / "t.yaml"
    tarn_schema.write_text(yaml.safe_dump({"columns": [{"name": "id", "type": "long", "nullable": False}]}))
    [col] = load_schema_file(tarn_schema)
    assert (col.name, col.type, col.nullable) == ("id", "long", False)

    arc = tmp_path / "arc.json"
    arc.write_text(
        json.dumps(
            [
                {"name": "amount", "type": "decimal", "precision": 12, "scale": 3, "nullable": True},
                {"name": "flag", "type": "boolean", "nullable": False, "nullableValues": ["", "NA"], "trim": True},
            ]
        )
    )
    amount, flag = load_schema_file(arc)
    assert amount.type == "decimal(12,3)"
    assert (flag.type, flag.nullable, flag.null_values, flag.trim) == ("boolean", False, ("", "NA"), True)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"name": "x", "type": "nope"}]))
    with pytest.raises(ConfigError, match=r"field 'x'"):
        load_schema_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_schema_file(tmp_path / "missing.json")


# ------------------------------------------------------------------------------ JSON schema


def test_json_schema_describes_tarn_yaml() -> None:
    schema = Lake.json_schema()
    assert schema["type"] == "object"
    assert {"name", "lake", "metastore", "ingest", "datasets", "secrets_file"} <= set(schema["properties"])
    assert schema.get("additionalProperties") is False  # unknown keys are errors in editors too
    defs = schema["$defs"]
    dataset = defs["DatasetSpec"]
    assert set(dataset["properties"]["evolution"]["enum"]) == {"evolve", "freeze", "rescue"}
    assert set(dataset["properties"]["format"]["enum"]) == {"auto", "csv", "jsonl", "json", "parquet"}
    assert "description" in dataset["properties"]["landing"]
    json.dumps(schema)  # serialisable


@pytest.mark.parametrize(
    "text",
    [
        "ingest:\n  workers: '${secret:VALUE}'\n",
        "datasets:\n  - name: a\n    format: '${secret:VALUE}'\n",
        "datasets:\n  - name: '${secret:VALUE}'\n",
    ],
)
def test_validation_errors_never_show_a_secret_value(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _parse(text, env={"TARN_SECRET_VALUE": "Not-A-Valid-Value-" + SECRET})
    assert SECRET not in str(exc.value)
