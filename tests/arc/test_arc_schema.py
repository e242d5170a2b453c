"""Arc schema files (TypingTransform)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tarn.arc import ArcField, load_arc_schema
from tarn.arc.schema import ARC_FIELD_TYPES
from tarn.errors import ConfigError


def test_every_field_type_and_option(jobs: Path) -> None:
    fields = load_arc_schema(jobs / "types_schema.json")
    assert tuple(field.type for field in fields) == ARC_FIELD_TYPES
    by_name = {field.name: field for field in fields}
    assert by_name["s"].nullable_values == ("", "null")
    assert by_name["s"].null_replacement_value == "unknown"
    assert (by_name["s"].trim, by_name["s"].description) == (True, "a string")
    assert (by_name["i"].nullable, by_name["i"].primary_key, by_name["i"].id) == (False, True, "f1")
    assert by_name["d"].metadata == {"pii": False, "unit": "kg"}
    assert (by_name["m"].precision, by_name["m"].scale) == (38, 18)
    assert (by_name["b"].true_values, by_name["b"].false_values) == (("true", "yes"), ("false", "no"))
    assert by_name["ts"].formatters == ("yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd'T'HH:mm:ssXXX")
    assert by_name["ts"].timezone_id == "Pacific/Auckland"
    assert by_name["bin"].encoding == "base64"
    # defaults
    assert (by_name["l"].nullable, by_name["l"].trim, by_name["l"].nullable_values) == (True, False, ())


def test_schema_from_json_text_and_from_objects() -> None:
    text = '[{"name": "a", "type": "integer"}]'
    assert load_arc_schema(text) == load_arc_schema(json.loads(text)) == [ArcField(name="a", type="integer")]


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ('{"name": "a"}', "inline schema must be a JSON array of fields, not dict"),
        ("[1]", "inline schema, field 1 must be an object, not int"),
        (
            '[{"name": "a", "type": "string", "nulable": true}]',
            "inline schema, field 1 'a': unknown key 'nulable' (did you mean 'nullable'?)",
        ),
        (
            '[{"name": "a", "type": "int"}]',
            "inline schema, field 1 'a': 'type' is 'int', not one of 'string', 'integer', 'long', 'double', "
            "'decimal', 'boolean', 'date', 'timestamp', 'time', 'binary' (did you mean 'integer'?)",
        ),
        (
            '[{"name": "a", "type": "decimal", "precision": 10}]',
            "inline schema, field 1 'a': a 'decimal' field needs 'precision' and 'scale'",
        ),
        (
            '[{"name": "a", "type": "decimal", "precision": 4, "scale": 6}]',
            "inline schema, field 1 'a': 'scale' (6) is larger than 'precision' (4)",
        ),
        (
            '[{"name": "a", "type": "long", "scale": 2}]',
            "'precision'/'scale' are only used with type 'decimal', not 'long'",
        ),
        (
            '[{"name": "a", "type": "string", "trueValues": ["y"]}]',
            "'trueValues'/'falseValues' are only used with type 'boolean', not 'string'",
        ),
        (
            '[{"name": "a", "type": "string"}, {"name": "a", "type": "long"}]',
            "inline schema, field 2 'a': the name 'a' is used twice",
        ),
        ('[{"type": "string"}]', "inline schema, field 1: missing required key 'name'"),
        ("[{", "inline schema is not valid JSON"),
    ],
)
def test_schema_errors(schema: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_arc_schema(schema)
    assert message in info.value.message


def test_missing_schema_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"schema file '.*nope.json' does not exist"):
        load_arc_schema(tmp_path / "nope.json")
