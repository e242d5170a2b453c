"""The two example Arc jobs (copied from the shared examples) parse into the expected stages."""

from __future__ import annotations

from pathlib import Path

from tarn.arc import (
    ArcJob,
    apply_sql_params,
    filter_environment,
    load_arc_job,
    load_arc_schema,
)
from tarn.arc.stages import (
    DelimitedExtract,
    DeltaLakeExtract,
    DeltaLakeLoad,
    SQLTransform,
    SQLValidate,
    TypingTransform,
)


def _summary(job: ArcJob) -> list[tuple[str, str, str | None, str | None]]:
    """(type, name, view read, view written) of each stage."""
    return [
        (stage.type, stage.name, getattr(stage, "input_view", None), getattr(stage, "output_view", None))
        for stage in job.stages
    ]


def test_orders_job_parses(examples: Path, variables: dict[str, str]) -> None:
    job = load_arc_job(examples / "orders_job.conf", variables)

    assert job.source == examples / "orders_job.conf"
    assert job.plugins == {}
    assert _summary(job) == [
        ("DelimitedExtract", "extract orders", None, "orders_raw"),
        ("TypingTransform", "type orders", "orders_raw", "orders_typed"),
        ("SQLTransform", "good orders", None, "orders_good"),
        ("SQLValidate", "at most one percent bad rows", None, None),
        ("DeltaLakeLoad", "load orders", "orders_good", None),
    ]
    extract, typing, good, validate, load = job.stages
    assert isinstance(extract, DelimitedExtract)
    assert extract.input_uri == "/data/orders.csv"
    assert (extract.delimiter, extract.header, extract.quote) == ("Comma", True, "DoubleQuote")
    assert isinstance(typing, TypingTransform)
    assert typing.schema_uri == "/jobs/schema_orders.json"
    assert typing.fail_mode == "permissive"
    assert isinstance(good, SQLTransform)
    assert good.persist is True  # the stage written without a comma before "persist"
    assert good.sql_params == {"typed": "orders_typed"}
    assert apply_sql_params(good.sql or "", good.sql_params, good.name) == (
        "SELECT order_id, customer_id, ordered_at, amount, status FROM orders_typed WHERE SIZE(_errors) = 0"
    )
    assert isinstance(validate, SQLValidate)
    assert validate.sql is not None and validate.sql.startswith("SELECT SUM(CASE WHEN SIZE(_errors) > 0")
    assert "TO_JSON(NAMED_STRUCT('bad'" in validate.sql  # the """ string keeps its lines
    assert isinstance(load, DeltaLakeLoad)
    assert (load.output_uri, load.save_mode, load.partition_by) == ("/lake/orders", "Overwrite", ("status",))
    assert all(stage.environments == ("production", "test") for stage in job.stages)


def test_customers_notebook_parses(examples: Path, variables: dict[str, str]) -> None:
    job = load_arc_job(examples / "customers_scd2.ipynb", variables)

    assert _summary(job) == [
        ("DelimitedExtract", "extract initial customers", None, "initial_raw"),
        ("TypingTransform", "type initial", "initial_raw", "initial_typed"),
        ("SQLValidate", "no typing errors", None, None),
        ("SQLTransform", "scd columns", None, "initial_load"),
        ("DeltaLakeLoad", "initial load", "initial_load", None),
        ("DelimitedExtract", "extract changes", None, "update_raw"),
        ("TypingTransform", "type changes", "update_raw", "update_typed"),
        ("SQLTransform", "scd columns for changes", None, "update_load"),
        ("DeltaLakeExtract", "current customers", None, "current_customers"),
        ("SQLTransform", "rows to merge", None, "staged"),
        ("SQLTransform", "scd2 merge", None, None),
        ("DeltaLakeExtract", "read result", None, "result"),
        ("SQLValidate", "scd2 counts", None, None),
    ]
    stages = job.stages
    first = stages[0]
    assert isinstance(first, DelimitedExtract)
    assert (first.input_uri, first.header, first.quote) == ("/data/customers_initial.csv", False, "None")
    assert isinstance(stages[1], TypingTransform) and stages[1].schema_uri == "/jobs/schema_customers.json"
    assert isinstance(stages[4], DeltaLakeLoad) and stages[4].output_uri == "/lake/customers"
    assert isinstance(stages[8], DeltaLakeExtract) and stages[8].input_uri == "/lake/customers"

    no_errors = stages[2]
    assert isinstance(no_errors, SQLValidate)
    assert no_errors.sql_params == {"inputView": "initial_typed"}
    assert no_errors.sql is not None and no_errors.sql.endswith("FROM ${inputView}")

    scd = stages[3]
    assert isinstance(scd, SQLTransform)
    # ${ETL_CONF_NOW} in the magic's arguments came from the %env cell before it
    assert scd.sql_params == {"source": "initial_typed", "now": "current_timestamp()"}
    assert scd.sql is not None
    assert apply_sql_params(scd.sql, scd.sql_params, scd.name).startswith(
        "SELECT customer_id, name, email, state, current_timestamp() AS valid_from"
    )
    changes = stages[7]
    assert isinstance(changes, SQLTransform)
    assert changes.sql_params == {"source": "update_typed", "now": "current_timestamp()"}

    merge = stages[10]
    assert isinstance(merge, SQLTransform) and merge.output_view is None
    assert merge.sql is not None and merge.sql.startswith("MERGE INTO current_customers t")

    counts = stages[12]
    assert isinstance(counts, SQLValidate)
    # a job variable in the SQL text is resolved at load; only sqlParams placeholders are left
    assert counts.sql is not None and "300 + 32 + 40" in counts.sql and "${" not in counts.sql
    assert counts.environments == ("test",)

    assert job.variables["ETL_CONF_NOW"] == "current_timestamp()"
    assert job.variables["ETL_CONF_LATER"] == "current_timestamp()"
    assert job.variables["ETL_CONF_DATA_URL"] == "/data"


def test_customers_notebook_by_environment(examples: Path, variables: dict[str, str]) -> None:
    job = load_arc_job(examples / "customers_scd2.ipynb", variables)

    production = filter_environment(job, "production")
    assert [stage.name for stage in production.stages] == [stage.name for stage in job.stages[:11]]
    assert len(filter_environment(job, "test").stages) == 13
    assert filter_environment(job, "staging").stages == ()
    assert production.source == job.source


def test_example_schemas_load(examples: Path) -> None:
    orders = load_arc_schema(examples / "schema_orders.json")
    assert [(field.name, field.type) for field in orders] == [
        ("order_id", "long"),
        ("customer_id", "integer"),
        ("ordered_at", "timestamp"),
        ("amount", "decimal"),
        ("status", "string"),
    ]
    assert orders[2].formatters == ("yyyy-MM-dd HH:mm:ss",) and orders[2].timezone_id == "UTC"
    assert (orders[3].precision, orders[3].scale, orders[3].nullable_values) == (10, 2, ("",))

    customers = load_arc_schema(examples / "schema_customers.json")
    assert customers[0].primary_key is True and customers[0].nullable is False
    assert customers[2].metadata == {"pii": True}
