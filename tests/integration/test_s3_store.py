"""The content store on an S3-compatible server (moto's S3 API server on 127.0.0.1, a separate
process; MinIO in docker/compose.yaml) through fsspec/s3fs, selected by ``RADGATE_OBJECT_STORE``
and the standard ``AWS_*`` variables: put/get/verify, then ``radgate ingest`` writing into the
bucket and a dataset materialised from it for training."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import load_script

pytestmark = pytest.mark.integration

s3_ci = load_script("scripts/ci/s3.py", "radgate_ci_s3")
BUCKET = "radgate-it"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import moto.server  # noqa: F401 (s3fs and moto come with the [test] extra: missing is a failure)
    import s3fs  # noqa: F401

    server = s3_ci.S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    try:
        server.create_bucket(BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_store(
    s3_server: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """RADGATE_OBJECT_STORE on the bucket (one prefix per test), credentials from the env."""
    from s3fs import S3FileSystem

    from governance.settings import get_settings

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    url = f"s3://{BUCKET}/{request.node.name}/store"
    monkeypatch.setenv("RADGATE_OBJECT_STORE", url)
    get_settings.cache_clear()
    # fsspec caches filesystems per process with the endpoint they were built with: one left by
    # another module's (stopped) server must not be reused.
    S3FileSystem.clear_instance_cache()
    yield url
    S3FileSystem.clear_instance_cache()


def test_content_store_round_trip_and_verification_on_s3(s3_store: str, s3_server: Any) -> None:
    from imaging.store import ContentStore, StoreError

    store = ContentStore.from_settings()
    data = b"DICM" * 100
    key = store.put(data)
    assert key == hashlib.sha256(data).hexdigest()
    assert store.put(data) == key  # content addressed: a second put is a no-op
    assert store.exists(key) and store.get(key) == data
    prefix = s3_store.removeprefix(f"s3://{BUCKET}/")
    assert s3_server.keys(BUCKET, prefix) == [f"{prefix}/{key[:2]}/{key[2:4]}/{key}.dcm"]
    # Readers that need a file (MONAI) get a verified local copy.
    local = store.path(key)
    assert store.cache_dir is not None and local.is_relative_to(store.cache_dir)
    assert local.read_bytes() == data
    # An object altered in the bucket is refused, not served.
    object_key = f"{prefix}/{key[:2]}/{key[2:4]}/{key}.dcm"
    s3_server.client().put_object(Bucket=BUCKET, Key=object_key, Body=b"tampered")
    with pytest.raises(StoreError, match="does not match"):
        store.get(key)
    missing = "0" * 64
    assert not store.exists(missing) and not store.path(missing).exists()
    with pytest.raises(StoreError, match="not in the store"):
        store.get(missing)


def test_ingest_writes_into_the_bucket_and_datasets_read_from_it(
    s3_store: str, s3_server: Any, tmp_path: Path, radgate_home: Path, as_role: Callable[[str], str]
) -> None:
    as_role("data-steward")  # `radgate ingest` needs a token (inherited by the subprocess)
    from sqlalchemy import select

    from governance.catalog import open_catalog
    from governance.catalog.models import Instance
    from imaging.datasets import create_dataset, materialize
    from imaging.demo_data import write_demo_studies

    demo = write_demo_studies(tmp_path / "in", patients=4, images_per_patient=2, seed=11, size=32)
    radgate = Path(sys.executable).with_name("radgate")
    result = subprocess.run(
        [str(radgate), "ingest", str(tmp_path / "in"), "--workers", "2"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    prefix = s3_store.removeprefix(f"s3://{BUCKET}/")
    in_bucket = {key.rsplit("/", 1)[1].removesuffix(".dcm") for key in s3_server.keys(BUCKET, prefix)}
    with open_catalog().session() as session:
        recorded = set(session.execute(select(Instance.sha256)).scalars())
    assert len(recorded) == len(demo.files) == 8
    assert in_bucket == recorded
    assert not (radgate_home / "store").exists(), "nothing may land in the local default store"

    report = create_dataset("s3tiny", demo.labels_csv, label_names=["no_finding", "opacity"])
    rows = materialize(report.version)
    assert len(rows) == 8
    for row in rows:
        assert hashlib.sha256(Path(row["image"]).read_bytes()).hexdigest() == row["sha256"]
