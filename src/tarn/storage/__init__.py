"""Storage backends behind one protocol (:class:`tarn.storage.base.Storage`): a local folder or an
``s3://bucket/prefix`` (boto3, imported only when an s3:// root is used)."""

from __future__ import annotations

from pathlib import Path

from tarn.config.spec import LakeSpec
from tarn.storage.base import Storage


def is_object_store(root: str) -> bool:
    return root.startswith("s3://")


def open_storage(lake: LakeSpec, project_dir: Path) -> Storage:
    """The storage of a lake root: a folder (relative to the project) or s3://bucket/prefix."""
    if is_object_store(lake.root):
        from tarn.storage.s3 import S3Storage

        return S3Storage(lake.root, lake.s3)
    from tarn.storage.local import LocalStorage

    return LocalStorage(project_dir / lake.root)
