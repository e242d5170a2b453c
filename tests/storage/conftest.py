"""The S3 server fixtures of tests/s3, shared with the storage contract tests."""

from __future__ import annotations

from tests.s3.conftest import aws_env, bucket, s3, s3_endpoint

__all__ = ["aws_env", "bucket", "s3", "s3_endpoint"]
