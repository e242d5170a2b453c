"""A lake root on S3 (any S3 API): ``s3://bucket/prefix``, zones as sub-prefixes.

Objects go through boto3 (the ``s3`` extra): streaming copies with the sha256 computed on the way,
server-side encryption on every put and copy. Delta tables under the root are read and written by
delta-rs' own object store with :func:`delta_storage_options`; DuckDB never reads ``s3://`` (its
httpfs extension cannot be downloaded offline): :meth:`S3Storage.local_path` spools an object to a
temporary local file while it is read.

pyarrow's ``S3FileSystem`` was tried first: with pyarrow 26 its writer fails against an S3 API that
answers ``CompleteMultipartUpload`` as moto does ("error embedded in a 200 OK response"), while
boto3's managed transfer works against both; reads and listings would have worked either way.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tarn.config.spec import LakeSpec, S3Spec
from tarn.errors import MissingExtraError, NotFoundError, StorageError
from tarn.storage.base import TABLE_ZONES, ZONES, LandedFile, RawCopy, is_partial_name

_PART = 16 << 20  # multipart part size of Tarn's uploads; memory per copy is about two parts


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key). ``s3a://`` is accepted too."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in ("s3", "s3a"):
        raise StorageError(f"{uri!r} is not an s3:// URI", hint="write object-store locations as s3://bucket/key")
    bucket, _, key = rest.partition("/")
    return bucket, key


def s3a_uri(uri: str) -> str:
    """The same location for Spark's s3a filesystem."""
    return "s3a://" + uri.split("://", 1)[1] if uri.startswith("s3://") else uri


# ------------------------------------------------------------------------------ settings
def delta_storage_options(s3: S3Spec) -> dict[str, str]:
    """delta-rs (object_store) options for tables under an s3:// root.

    Concurrent commits: delta-rs 1.6 writes each log entry with a conditional create
    (``If-None-Match: *``), which AWS S3 (since 2024), MinIO and moto honour; measured here, twelve
    concurrent appends against moto's server all landed as versions 1..12. ``delta_commit: etag``
    sets ``AWS_CONDITIONAL_PUT=etag`` for stores that only offer ETag-conditional puts;
    ``unsafe_rename`` (``AWS_S3_ALLOW_UNSAFE_RENAME``) is for a store with neither, and is safe
    only with a single writer."""
    opts: dict[str, str] = {}
    if s3.endpoint_url:
        opts["AWS_ENDPOINT_URL"] = s3.endpoint_url
    if s3.region:
        opts["AWS_REGION"] = s3.region
    if s3.allow_http:
        opts["AWS_ALLOW_HTTP"] = "true"
    opts["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false" if s3.use_path_style else "true"
    if s3.profile:
        opts["AWS_PROFILE"] = s3.profile
    if s3.sse != "none":
        opts["AWS_SERVER_SIDE_ENCRYPTION"] = s3.sse
        if s3.sse_kms_key_id:
            opts["AWS_SSE_KMS_KEY_ID"] = s3.sse_kms_key_id
    if s3.delta_commit == "etag":
        opts["AWS_CONDITIONAL_PUT"] = "etag"
    elif s3.delta_commit == "unsafe_rename":
        opts["AWS_S3_ALLOW_UNSAFE_RENAME"] = "true"
    if s3.access_key_id and s3.secret_access_key:  # from ${secret:…} references only
        opts["AWS_ACCESS_KEY_ID"] = s3.access_key_id
        opts["AWS_SECRET_ACCESS_KEY"] = s3.secret_access_key
        if s3.session_token:
            opts["AWS_SESSION_TOKEN"] = s3.session_token
    return opts


_HADOOP_DEFAULT_CHAIN = "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider"
_HADOOP_KEYS_CHAIN = (
    "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider,org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
)


def spark_s3a_conf(lake: LakeSpec) -> dict[str, str]:
    """Spark settings (``spark.hadoop.fs.s3a.*``) that give Spark's s3a filesystem the lake's S3
    settings. Needs hadoop-aws and the AWS SDK v2 bundle on the cluster's classpath (see the
    README); {} for a local lake root.

    Credentials: the AWS SDK's default chain (environment, web identity, profile, container and
    instance roles) — the same chain Tarn itself uses; with ``${secret:…}`` keys in tarn.yaml,
    those keys (Spark's default ``spark.redaction.regex`` hides them in its UI and logs)."""
    if not lake.root.startswith("s3://"):
        return {}
    s3 = lake.s3
    h = "spark.hadoop.fs.s3a."
    conf = {
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",  # s3:// paths as well
        h + "path.style.access": "true" if s3.use_path_style else "false",
        h + "connection.ssl.enabled": "false" if (s3.endpoint_url or "").startswith("http://") else "true",
        h + "aws.credentials.provider": _HADOOP_DEFAULT_CHAIN,
    }
    if s3.endpoint_url:
        conf[h + "endpoint"] = s3.endpoint_url
    if s3.region:
        conf[h + "endpoint.region"] = s3.region
    if s3.sse != "none":
        conf[h + "encryption.algorithm"] = "SSE-S3" if s3.sse == "AES256" else "SSE-KMS"
        if s3.sse_kms_key_id:
            conf[h + "encryption.key"] = s3.sse_kms_key_id
    if s3.profile:
        # The SDK's default chain reads AWS_PROFILE; executors get it through their environment.
        conf["spark.executorEnv.AWS_PROFILE"] = s3.profile
    if s3.access_key_id and s3.secret_access_key:
        conf[h + "aws.credentials.provider"] = _HADOOP_KEYS_CHAIN
        conf[h + "access.key"] = s3.access_key_id
        conf[h + "secret.key"] = s3.secret_access_key
        if s3.session_token:
            conf[h + "session.token"] = s3.session_token
    return conf


# ------------------------------------------------------------------------------ errors
def _translate(e: BaseException, action: str, where: str, s3: S3Spec) -> StorageError:
    """A boto3/botocore error as a StorageError saying what to do."""
    from botocore import exceptions as bx

    endpoint = s3.endpoint_url or "AWS S3"
    if isinstance(e, bx.NoCredentialsError | bx.PartialCredentialsError | bx.ProfileNotFound):
        err = StorageError(
            f"cannot {action} {where}: {e}",
            hint="give Tarn AWS credentials the usual way: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE (or lake.s3.profile), or an instance/container role",
        )
        err.retryable = False
        return err
    if isinstance(e, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ReadTimeoutError):
        return StorageError(
            f"cannot {action} {where}: the S3 endpoint {endpoint} is unreachable ({e})",
            hint="check lake.s3.endpoint_url and that the endpoint is up and reachable from this host",
        )
    if isinstance(e, bx.ClientError):
        info = e.response.get("Error", {})
        code = str(info.get("Code", ""))
        msg = str(info.get("Message", "")) or code
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        bucket = where.split("://", 1)[-1].split("/")[0]
        if code == "NoSuchBucket":
            err = StorageError(
                f"cannot {action} {where}: bucket {bucket!r} does not exist at {endpoint}",
                hint=f"create it (aws s3 mb s3://{bucket}) or fix lake.root; Tarn never creates buckets",
            )
            err.retryable = False
            return err
        if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled") or status == 403:
            err = StorageError(
                f"cannot {action} {where}: access denied ({msg})",
                hint="check which AWS identity Tarn runs as (aws sts get-caller-identity) and that its policy "
                "allows s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on the lake's prefix",
            )
            err.retryable = False
            return err
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
            err = StorageError(
                f"cannot {action} {where}: the AWS credentials are not accepted ({code}: {msg})",
                hint="renew or fix the credentials in the environment / profile Tarn runs with",
            )
            err.retryable = code == "ExpiredToken"
            return err
        if code.startswith("KMS.") or "kms" in msg.lower():
            err = StorageError(
                f"cannot {action} {where}: server-side encryption failed ({code}: {msg})",
                hint="check lake.s3.sse_kms_key_id and that Tarn's identity may use the key (kms:GenerateDataKey, "
                "kms:Decrypt)",
            )
            err.retryable = False
            return err
        return StorageError(f"cannot {action} {where}: {code}: {msg}", hint="retried with backoff")
    return StorageError(f"cannot {action} {where}: {type(e).__name__}: {e}", hint="retried with backoff")


def _client_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


def make_session(s3: S3Spec) -> Any:
    """A boto3 session with the lake's profile and region; credentials from the AWS chain (or ${secret:…})."""
    try:
        import boto3
    except ModuleNotFoundError as e:
        raise MissingExtraError("an s3:// lake root", "s3", e.name or "boto3") from None
    try:
        return boto3.session.Session(
            profile_name=s3.profile,
            region_name=s3.region,
            aws_access_key_id=s3.access_key_id,
            aws_secret_access_key=s3.secret_access_key,
            aws_session_token=s3.session_token,
        )
    except _client_errors() as e:
        raise _translate(e, "open", "the AWS session", s3) from None


def make_client(s3: S3Spec) -> Any:
    """A boto3 S3 client with the lake's settings."""
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path" if s3.use_path_style else "virtual"},
        retries={"max_attempts": s3.max_attempts, "mode": "standard"},
        connect_timeout=10,
        read_timeout=120,
    )
    return make_session(s3).client("s3", endpoint_url=s3.endpoint_url, config=config)


class _HashingReader:
    """A file-like reader that hashes and counts the bytes read through it, in order."""

    def __init__(self, raw: IO[bytes] | Any) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        chunk: bytes = self.raw.read(n)
        self.sha.update(chunk)
        self.size += len(chunk)
        return chunk


class S3Storage:
    """Zones under ``s3://bucket/prefix``."""

    def __init__(self, root: str, s3: S3Spec, *, client: Any = None) -> None:
        self.root = root.rstrip("/")
        self.bucket, prefix = split_uri(self.root)
        self.prefix = prefix.strip("/")
        self.s3 = s3
        self.client = client if client is not None else make_client(s3)
        from boto3.s3.transfer import TransferConfig

        self._transfer = TransferConfig(multipart_threshold=_PART, multipart_chunksize=_PART, max_concurrency=4)

    # ---------------------------------------------------------------- keys
    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _sse(self) -> dict[str, str]:
        if self.s3.sse == "none":
            return {}
        args: dict[str, str] = {"ServerSideEncryption": self.s3.sse}
        if self.s3.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.s3.sse_kms_key_id
        return args

    def _err(self, e: BaseException, action: str, key: str) -> StorageError:
        return _translate(e, action, self.uri(key), self.s3)

    # ---------------------------------------------------------------- zones
    def ensure_zones(self) -> None:
        """Zones are prefixes (nothing to create); checks that the bucket is there and readable."""
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key("landing") + "/", MaxKeys=1)
        except _client_errors() as e:
            raise self._err(e, "open the lake root", self.prefix) from None

    def table_uri(self, zone: str, table: str) -> str:
        assert zone in TABLE_ZONES, zone
        return self.uri(self.key(zone, table))

    def landing_uri(self, rel: str) -> str:
        return self.uri(self.key("landing", rel))

    def _landed(self, obj: dict[str, Any], base: str) -> LandedFile:
        mtime_ns = int(obj["LastModified"].timestamp() * 1_000_000) * 1000
        return LandedFile(str(obj["Key"])[len(base) :], int(obj["Size"]), mtime_ns, str(obj["ETag"]).strip('"'))

    def list_landing(self) -> Iterator[LandedFile]:
        base = self.key("landing") + "/"
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", ()):
                    key = str(obj["Key"])
                    parts = key[len(base) :].split("/")
                    if key.endswith("/") or any(p.startswith(".") for p in parts) or is_partial_name(parts[-1]):
                        continue  # folder markers, hidden paths, files still being written
                    yield self._landed(obj, base)
        except _client_errors() as e:
            raise self._err(e, "list the landing zone", base) from None

    def stat_landing(self, rel: str) -> LandedFile | None:
        key = self.key("landing", rel)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except _client_errors() as e:
            if _is_not_found(e):
                return None
            raise self._err(e, "read", key) from None
        return self._landed(
            {"Key": key, "Size": head["ContentLength"], "LastModified": head["LastModified"], "ETag": head["ETag"]},
            self.key("landing") + "/",
        )

    # ---------------------------------------------------------------- raw
    def copy_to_raw(self, source: str, *, etag: str | None = None) -> RawCopy:
        """Stream ``source`` (an s3:// URI, or a local file) into raw/.tmp/, hashing on the way.
        With ``etag``, the copy fails if the object's content is no longer that version."""
        tmp_key = self.key("raw", ".tmp", uuid.uuid4().hex)
        try:
            if source.startswith(("s3://", "s3a://")):
                bucket, key = split_uri(source)
                extra = {"IfMatch": f'"{etag}"'} if etag else {}
                try:
                    body = self.client.get_object(Bucket=bucket, Key=key, **extra)["Body"]
                except _client_errors() as e:
                    if _is_not_found(e):
                        raise FileNotFoundError(source) from None
                    if _code(e) == "PreconditionFailed":
                        raise StorageError(f"{source} changed while it was being copied; it is read again") from None
                    raise
                try:
                    reader = self._upload(body, tmp_key)
                finally:
                    body.close()
            else:
                with open(source, "rb") as f:
                    reader = self._upload(f, tmp_key)
        except _client_errors() as e:
            self._delete_quietly(tmp_key)
            raise self._err(e, "copy into the raw zone", tmp_key) from None
        except BaseException:
            self._delete_quietly(tmp_key)
            raise
        return RawCopy(self.uri(tmp_key), reader.sha.hexdigest(), reader.size)

    def _upload(self, stream: Any, key: str) -> _HashingReader:
        reader = _HashingReader(stream)
        self.client.upload_fileobj(reader, self.bucket, key, ExtraArgs=self._sse(), Config=self._transfer)
        return reader

    def keep_raw(self, copy: RawCopy, dataset: str, object_id: str, name: str) -> str:
        day = time.strftime("%Y/%m/%d", time.gmtime())
        final = self.key("raw", dataset, day, object_id, name)
        _, tmp_key = split_uri(copy.temp_path)
        try:
            # Server-side (multipart for big objects); the raw zone is never written again after this.
            source = {"Bucket": self.bucket, "Key": tmp_key}
            self.client.copy(source, self.bucket, final, ExtraArgs=self._sse(), Config=self._transfer)
        except _client_errors() as e:
            raise self._err(e, "keep the raw copy at", final) from None
        self._delete_quietly(tmp_key)
        return self.uri(final)

    def discard_raw(self, copy: RawCopy) -> None:
        _, key = split_uri(copy.temp_path)
        self._delete_quietly(key)

    def _delete_quietly(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except _client_errors():
            pass  # a leftover temporary copy is removed by sweep_tmp

    def sweep_tmp(self, older_than_seconds: float) -> int:
        """Delete raw/.tmp/ objects (and abort multipart uploads there) older than this."""
        base = self.key("raw", ".tmp") + "/"
        cutoff = time.time() - older_than_seconds
        removed = 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", ()):
                    if obj["LastModified"].timestamp() < cutoff:
                        self.client.delete_object(Bucket=self.bucket, Key=obj["Key"])
                        removed += 1
            uploads = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=base)
            for up in uploads.get("Uploads", ()):
                if up["Initiated"].timestamp() < cutoff:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                    removed += 1
        except _client_errors() as e:
            raise self._err(e, "sweep the temporary copies under", base) from None
        return removed

    # ---------------------------------------------------------------- readers
    @contextmanager
    def local_path(self, uri: str) -> Iterator[str]:
        """Spool the object to a temporary local file (same name) for readers that need a path."""
        bucket, key = split_uri(uri)
        tmpdir = tempfile.mkdtemp(prefix="tarn-spool-")
        path = Path(tmpdir) / (key.rsplit("/", 1)[-1] or "object")
        try:
            try:
                self.client.download_file(bucket, key, str(path), Config=self._transfer)
            except _client_errors() as e:
                if _is_not_found(e):
                    raise NotFoundError(f"{uri} does not exist", hint="was the raw object deleted?") from None
                raise _translate(e, "read", uri, self.s3) from None
            yield str(path)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = split_uri(uri)
        try:
            return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except _client_errors() as e:
            raise _translate(e, "read", uri, self.s3) from None

    def delta_options(self) -> dict[str, str]:
        return delta_storage_options(self.s3)

    # ---------------------------------------------------------------- files at a location
    def put_file(self, local_path: str, uri: str) -> None:
        """Upload a local file to ``uri`` (multipart when big), with the lake's server-side encryption."""
        bucket, key = split_uri(uri)
        try:
            self.client.upload_file(local_path, bucket, key, ExtraArgs=self._sse(), Config=self._transfer)
        except _client_errors() as e:
            raise _translate(e, "write", uri, self.s3) from None

    def _listed(self, bucket: str, key: str) -> Iterator[str]:
        """The key itself (if there is such an object) and every key under ``key/``."""
        try:
            self.client.head_object(Bucket=bucket, Key=key)
            yield key
        except _client_errors() as e:
            if not _is_not_found(e):
                raise
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key + "/"):
            for obj in page.get("Contents", ()):
                yield str(obj["Key"])

    def remove_prefix(self, uri: str, *, keep: str | None = None) -> int:
        """Delete the object at ``uri`` and every object under ``uri/`` (in batches of 1000), but ``keep``."""
        bucket, key = split_uri(uri)
        key = key.strip("/")
        if not key or (bucket == self.bucket and key in {self.prefix, *(self.key(z) for z in ZONES)}):
            raise StorageError(
                f"refusing to remove {uri}: it is a whole bucket, the lake root or one of its zones",
                hint="give the output (or table) a folder of its own below a zone, e.g. <zone>/<name>",
            )
        kept = split_uri(keep)[1] if keep else None
        removed = 0
        batch: list[dict[str, str]] = []

        def flush() -> None:
            nonlocal removed
            if not batch:
                return
            answer = self.client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            errors = answer.get("Errors") or ()
            if errors:
                first = errors[0]
                raise StorageError(
                    f"cannot remove {len(errors)} object(s) under {uri}: {first.get('Key')}: "
                    f"{first.get('Code')}: {first.get('Message')}",
                    hint="check that Tarn's identity may s3:DeleteObject there; removing again is safe",
                )
            removed += len(batch)
            batch.clear()

        try:
            for k in self._listed(bucket, key):
                if k == kept:
                    continue
                batch.append({"Key": k})
                if len(batch) == 1000:
                    flush()
            flush()
        except _client_errors() as e:
            raise _translate(e, "remove the objects under", uri, self.s3) from None
        return removed

    def has_objects(self, uri: str) -> bool:
        bucket, key = split_uri(uri)
        key = key.strip("/")
        try:
            prefix = f"{key}/" if key else ""
            page = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=2)
            if any(o["Key"] != prefix for o in page.get("Contents", ())):  # a folder marker alone is empty
                return True
            if not key:
                return False
            self.client.head_object(Bucket=bucket, Key=key)
        except _client_errors() as e:
            if _is_not_found(e):
                return False
            raise _translate(e, "list", uri, self.s3) from None
        return True


def _code(e: BaseException) -> str:
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _is_not_found(e: BaseException) -> bool:
    return _code(e) in ("404", "NoSuchKey", "NotFound")
