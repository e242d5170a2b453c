"""S3 settings: credentials never from tarn.yaml literals, server-side encryption on every object
Tarn writes (raw copies and Delta files), actionable storage errors, the delta-rs options, and the
Spark s3a configuration generated from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from tests.s3.conftest import s3_settings, write_s3_project

from tarn.config.loader import load_project, parse_project
from tarn.config.spec import LakeSpec, S3Spec
from tarn.errors import ConfigError, StorageError
from tarn.lake import Lake
from tarn.storage.s3 import S3Storage, delta_storage_options, s3a_uri, spark_s3a_conf
from tarn.tables import delta


def _yaml(s3: dict[str, Any]) -> str:
    return yaml.safe_dump({"lake": {"root": "s3://b/lake", "s3": s3}})


@pytest.mark.parametrize("key", ["access_key_id", "secret_access_key", "session_token"])
def test_literal_credentials_in_tarn_yaml_are_refused(key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_project(_yaml({key: "AKIAEXAMPLE"}), where="tarn.yaml", env={})
    assert f"lake.s3.{key}" in str(e.value) and "AWS_PROFILE" in str(e.value)
    assert "AKIAEXAMPLE" not in str(e.value)


def test_an_environment_reference_is_not_a_secret_either() -> None:
    with pytest.raises(ConfigError, match="access_key_id"):
        parse_project(
            _yaml({"access_key_id": "${KEY}", "secret_access_key": "${secret:S}"}),
            where="tarn.yaml",
            env={"KEY": "x", "TARN_SECRET_S": "y"},
        )


def test_secret_references_are_accepted_and_reach_delta_and_spark() -> None:
    spec, secrets = parse_project(
        _yaml({"access_key_id": "${secret:AK}", "secret_access_key": "${secret:SK}"}),
        where="tarn.yaml",
        env={"TARN_SECRET_AK": "ak-value", "TARN_SECRET_SK": "sk-value"},
    )
    assert spec.lake.s3.access_key_id == "ak-value"
    assert secrets.redact("key sk-value") == "key ***"
    assert delta_storage_options(spec.lake.s3)["AWS_SECRET_ACCESS_KEY"] == "sk-value"
    conf = spark_s3a_conf(spec.lake)
    assert conf["spark.hadoop.fs.s3a.access.key"] == "ak-value"
    assert "SimpleAWSCredentialsProvider" in conf["spark.hadoop.fs.s3a.aws.credentials.provider"]


def test_s3_spec_checks() -> None:
    with pytest.raises(ValueError, match="allow_http"):
        S3Spec(endpoint_url="http://minio:9000")
    with pytest.raises(ValueError, match="aws:kms"):
        S3Spec(sse="AES256", sse_kms_key_id="k")
    with pytest.raises(ValueError, match="s3://"):
        LakeSpec(root="s3a://bucket/lake")
    with pytest.raises(ValueError, match="bucket"):
        LakeSpec(root="s3:///lake")


def test_delta_options_for_each_commit_mode() -> None:
    base = S3Spec(endpoint_url="http://127.0.0.1:9000", allow_http=True, region="eu-west-1")
    opts = delta_storage_options(base)
    assert opts == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_REGION": "eu-west-1",
        "AWS_ALLOW_HTTP": "true",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
    }
    etag = delta_storage_options(base.model_copy(update={"delta_commit": "etag"}))
    assert etag["AWS_CONDITIONAL_PUT"] == "etag"
    unsafe = delta_storage_options(base.model_copy(update={"delta_commit": "unsafe_rename"}))
    assert unsafe["AWS_S3_ALLOW_UNSAFE_RENAME"] == "true"
    kms = delta_storage_options(S3Spec(sse="aws:kms", sse_kms_key_id="alias/tarn", profile="lake"))
    assert kms["AWS_SERVER_SIDE_ENCRYPTION"] == "aws:kms" and kms["AWS_SSE_KMS_KEY_ID"] == "alias/tarn"
    assert kms["AWS_PROFILE"] == "lake" and kms["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] == "true"


def test_spark_s3a_conf_maps_every_setting() -> None:
    lake = LakeSpec(
        root="s3://bucket/lake",
        s3=S3Spec(
            endpoint_url="http://minio:9000",
            allow_http=True,
            region="eu-west-1",
            sse="aws:kms",
            sse_kms_key_id="arn:aws:kms:eu-west-1:1:key/k",
            profile="lake",
        ),
    )
    h = "spark.hadoop.fs.s3a."
    assert spark_s3a_conf(lake) == {
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        h + "endpoint": "http://minio:9000",
        h + "endpoint.region": "eu-west-1",
        h + "path.style.access": "true",
        h + "connection.ssl.enabled": "false",
        h + "aws.credentials.provider": "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider",
        h + "encryption.algorithm": "SSE-KMS",
        h + "encryption.key": "arn:aws:kms:eu-west-1:1:key/k",
        "spark.executorEnv.AWS_PROFILE": "lake",
    }
    aws = spark_s3a_conf(LakeSpec(root="s3://bucket/lake", s3=S3Spec(sse="AES256")))
    assert aws[h + "encryption.algorithm"] == "SSE-S3"
    assert aws[h + "path.style.access"] == "false" and aws[h + "connection.ssl.enabled"] == "true"
    assert h + "endpoint" not in aws
    assert all(k.startswith("spark.") and isinstance(v, str) for k, v in aws.items())
    assert spark_s3a_conf(LakeSpec(root="lake")) == {}
    assert s3a_uri("s3://bucket/lake/stage/t") == "s3a://bucket/lake/stage/t"


def test_sse_applies_to_raw_copies_and_delta_files(tmp_path: Path, aws_env: str, bucket: str, s3: Any) -> None:
    kms_key = "arn:aws:kms:us-east-1:123456789012:key/tarn-test"
    d = write_s3_project(
        tmp_path / "p",
        aws_env,
        bucket,
        [{"name": "events", "format": "csv"}],
        s3={"sse": "aws:kms", "sse_kms_key_id": kms_key},
    )
    lake = Lake(d)
    try:
        src = tmp_path / "e.csv"
        src.write_text("id,v\n1,a\n2,b\n")
        [(_, reg, state)] = lake.ingest([src], "events")
        assert state == "committed", lake.object(reg.object_id).error
        raw = lake.object(reg.object_id).raw_path
        assert raw is not None
        head = s3.head_object(Bucket=bucket, Key=raw.split("/", 3)[3])
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == kms_key
        stage = s3.list_objects_v2(Bucket=bucket, Prefix="lake/stage/events/")["Contents"]
        files = [o["Key"] for o in stage if o["Key"].endswith(".parquet") or "/_delta_log/" in o["Key"]]
        assert files
        for key in files:
            assert s3.head_object(Bucket=bucket, Key=key).get("ServerSideEncryption") == "aws:kms", key
    finally:
        lake.close()


def test_sse_s3_on_storage_puts(aws_env: str, bucket: str, s3: Any, tmp_path: Path) -> None:
    st = S3Storage(f"s3://{bucket}/l", S3Spec(**s3_settings(aws_env, sse="AES256")))
    src = tmp_path / "f.csv"
    src.write_text("a\n1\n")
    kept = st.keep_raw(st.copy_to_raw(str(src)), "d", "o1", "f.csv")
    assert s3.head_object(Bucket=bucket, Key=kept.split("/", 3)[3])["ServerSideEncryption"] == "AES256"


def test_a_missing_bucket_is_a_clear_error(tmp_path: Path, aws_env: str) -> None:
    d = write_s3_project(tmp_path / "p", aws_env, "no-such-bucket-here", [{"name": "events"}])
    with pytest.raises(StorageError) as e:
        Lake(d)
    assert "bucket 'no-such-bucket-here' does not exist" in str(e.value)
    assert "aws s3 mb s3://no-such-bucket-here" in str(e.value)
    assert not e.value.retryable


def test_an_unreachable_endpoint_is_a_clear_error(aws_env: str) -> None:
    spec = S3Spec(endpoint_url="http://127.0.0.1:9", allow_http=True, region="us-east-1", max_attempts=1)
    st = S3Storage("s3://bucket/lake", spec)  # nothing listens on the discard port
    with pytest.raises(StorageError) as e:
        st.ensure_zones()
    assert "unreachable" in str(e.value) and "endpoint_url" in str(e.value)


def test_missing_credentials_are_a_clear_error(aws_env: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    st = S3Storage(f"s3://{bucket}/lake", S3Spec(**s3_settings(aws_env)))
    with pytest.raises(StorageError) as e:
        st.ensure_zones()
    assert "credentials" in str(e.value) and "AWS_PROFILE" in str(e.value)
    assert not e.value.retryable


def test_delta_tables_on_s3_take_concurrent_appends(aws_env: str, bucket: str) -> None:
    import threading

    uri = f"s3://{bucket}/lake/stage/conc"
    delta.register_storage_options(f"s3://{bucket}/lake", delta_storage_options(S3Spec(**s3_settings(aws_env))))
    delta.append(uri, pa.table({"i": [0]}), token="t0")
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            delta.append(uri, pa.table({"i": [i]}), token=f"t{i}")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    table = delta.open_table(uri)
    assert table.version() == 6
    assert sorted(table.to_pyarrow_table().column("i").to_pylist()) == list(range(7))
    for i in range(7):
        assert delta.committed(uri, f"t{i}")


def test_project_loads_with_s3_section(tmp_path: Path) -> None:
    (tmp_path / "tarn.yaml").write_text(_yaml({"endpoint_url": "https://s3.example", "region": "eu-west-1"}))
    spec, _ = load_project(tmp_path)
    assert spec.lake.s3.endpoint_url == "https://s3.example" and spec.lake.s3.use_path_style


@pytest.mark.parametrize(
    ("code", "status", "expect", "retryable"),
    [
        ("AccessDenied", 403, "s3:GetObject", False),
        ("NoSuchBucket", 404, "Tarn never creates buckets", False),
        ("KMS.NotFoundException", 400, "sse_kms_key_id", False),
        ("ExpiredToken", 400, "renew", True),
        ("SlowDown", 503, "retried with backoff", True),
    ],
)
def test_s3_error_answers_become_actionable_errors(code: str, status: int, expect: str, retryable: bool) -> None:
    """The error answers S3 gives (moto does not enforce IAM or KMS, so these are built from S3's
    documented error format) map to errors that say what to do."""
    from botocore.exceptions import ClientError

    from tarn.storage.s3 import _translate

    answer: Any = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    err = _translate(ClientError(answer, "GetObject"), "read", "s3://bucket/lake/raw/x", S3Spec())
    assert isinstance(err, StorageError)
    assert expect in str(err) and "s3://bucket/lake/raw/x" in str(err)
    assert err.retryable is retryable
