"""Opt-in: the Athena warehouse against real AWS.  Skipped unless the environment provides it.

Run with::

    XR_METHYL_TEST_ATHENA_URI='athena://<database>?unload_location=s3://...&s3_staging_dir=s3://...&region=...' \\
    XR_METHYL_TEST_SAMPLE_IDS='S0001,S0002' \\
    python -m pytest -m aws tests/warehouse/test_athena_aws.py

Credentials come from the normal AWS chain.  The tests only read the tables
(and write, then remove, UNLOAD output under the unload location); each run
costs a few Athena queries (10 MB minimum each).
"""

from __future__ import annotations

import os

import pyarrow.fs as pafs
import pytest

from xr_methyl import AthenaWarehouse, Loader, MethylStore, open_warehouse

URI = os.environ.get("XR_METHYL_TEST_ATHENA_URI", "")
IDS = [s for s in os.environ.get("XR_METHYL_TEST_SAMPLE_IDS", "").split(",") if s]

pytestmark = [
    pytest.mark.aws,
    pytest.mark.skipif(not (URI and IDS), reason="set XR_METHYL_TEST_ATHENA_URI and XR_METHYL_TEST_SAMPLE_IDS"),
]


@pytest.fixture(scope="module")
def athena() -> AthenaWarehouse:
    wh = open_warehouse(URI)
    assert isinstance(wh, AthenaWarehouse)
    return wh


def test_resolve_and_injection(athena):
    out = athena.resolve_samples([*IDS, "x' OR '1'='1", "a'); DROP TABLE beta; --"])
    assert out["sample_id"].to_pylist() == IDS


def test_export_exactly_the_pairs_and_clean_up(athena):
    resolved = athena.resolve_samples(IDS)
    groups: dict[str, list[str]] = {}
    for s, b in zip(resolved["sample_id"].to_pylist(), resolved["batch_id"].to_pylist()):
        groups.setdefault(b, []).append(s)
    export = athena.export("beta", groups)
    try:
        root = export.provenance["unload_location"].removeprefix("s3://")
        for batch, files in export.files.items():
            assert all(f.startswith(root) for f in files)
            seen = set(export.dataset(batch).to_table(columns=["sample_id"])["sample_id"].to_pylist())
            assert seen <= set(groups[batch])
        assert export.provenance["dollars"] >= 5 * 10 / 2**20
    finally:
        paths = [f for files in export.files.values() for f in files]
        export.close()
    infos = export.filesystem.get_file_info(paths)
    assert all(i.type == pafs.FileType.NotFound for i in infos)


def test_ensure_into_a_store(athena, tmp_path):
    store = MethylStore.create(tmp_path / "aws.methyl.zarr", warehouse=athena)
    sub = Loader(store).load(IDS[:2], progress=False)
    assert list(sub.sample.values) == IDS[:2]
    assert MethylStore.open(store.storage.root).cost()["queries"] == 3
