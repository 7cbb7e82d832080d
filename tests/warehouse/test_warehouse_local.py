"""LocalWarehouse: a tiny hand-written Iceberg warehouse, read back through the Warehouse protocol."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xr_methyl.errors import DataError, WarehouseError
from xr_methyl.warehouse.base import Warehouse
from xr_methyl.warehouse.local import LocalWarehouse, chrom_sort_key

INJECTION = "'; DROP TABLE beta; --"

# Batch ids that hive-style partition directories would escape (or that look escaped already).
ODD_BATCHES = [
    "B1",
    "plate 2/A=1%",
    "é 漢",
    INJECTION,
    'say "hi"',
    "a%20b",
    "..",
    "batch_index=0",
    "back\\slash",
]

# sample -> batch, with metadata; sample ids with quotes and unicode.
SAMPLES = {
    "S1": ("B1", 31.5, "F"),
    "S2": ("B1", 64.0, "M"),
    "O'Brien": ("plate 2/A=1%", 45.25, "M"),
    "Zoë 漢字": ("plate 2/A=1%", 22.0, "F"),
    INJECTION: ("é 漢", 70.0, "F"),
    'x"y': (INJECTION, 50.0, "M"),
    "S7": ('say "hi"', 33.0, "F"),
    "S8": ("a%20b", 41.0, "M"),
    "S9": ("..", 58.0, "F"),
    "S10": ("batch_index=0", 29.0, "M"),
    "S11": ("back\\slash", 77.0, "F"),
}

# cpg_id, chrom, pos: deliberately out of order, mixed prefixes, a tie on position.
CPGS = [
    ("chr10:5", "chr10", 5),
    ("chrX:100", "chrX", 100),
    ("chr2:30", "chr2", 30),
    ("chrM:1", "chrM", 1),
    ("chr1:200", "chr1", 200),
    ("chrUn_gl000220:3", "chrUn_gl000220", 3),
    ("7:9", "7", 9),
    ("chrY:4", "chrY", 4),
    ("chr1:50b", "chr1", 50),
    ("chr1:50a", "chr1", 50),
    ("chr22:8", "chr22", 8),
    ("chr2:10", "chr2", 10),
]
CPG_ORDER = [
    "chr1:50a",
    "chr1:50b",
    "chr1:200",
    "chr2:10",
    "chr2:30",
    "7:9",
    "chr10:5",
    "chr22:8",
    "chrX:100",
    "chrY:4",
    "chrM:1",
    "chrUn_gl000220:3",
]

META = pa.schema([("age", pa.float64()), ("sex", pa.string())])


def _long_rows(table: str) -> pa.Table:
    """Long rows for every mapped sample, plus stray rows of S1 filed under another batch."""
    cpg_ids = [c[0] for c in CPGS]
    rng = np.random.default_rng(7)
    batch, sample, cpg = [], [], []
    for s, (b, _, _) in SAMPLES.items():
        # Each sample misses a different CpG, as in sparse WGBS data.
        keep = [c for i, c in enumerate(cpg_ids) if i != len(sample) % len(cpg_ids)]
        batch += [b] * len(keep)
        sample += [s] * len(keep)
        cpg += keep
    batch += ["plate 2/A=1%"] * 2
    sample += ["S1"] * 2
    cpg += cpg_ids[:2]
    n = len(batch)
    if table == "beta":
        values = pa.array(rng.random(n), pa.float64())
    else:
        values = pa.array(rng.integers(1, 60, n), pa.int64())
    order = rng.permutation(n)  # warehouse files are not sorted
    return pa.table({"batch_id": batch, "sample_id": sample, "cpg_id": cpg, table: values}).take(order)


def fill(wh, value_types: dict | None = None) -> dict[str, pa.Table]:
    """Create the tables in any IcebergWarehouse and append the odd-id dataset; return what was appended."""
    wh.create_tables(metadata_schema=META, value_types=value_types)
    wh.append(
        "sample_batch_map",
        pa.table(
            {
                "sample_id": list(SAMPLES),
                "batch_id": [v[0] for v in SAMPLES.values()],
                "age": [v[1] for v in SAMPLES.values()],
                "sex": [v[2] for v in SAMPLES.values()],
            }
        ),
    )
    wh.append("cpgs", pa.table(dict(zip(["cpg_id", "chrom", "pos"], map(list, zip(*CPGS))))))
    data = {}
    for table in ("beta", "coverage"):
        data[table] = _long_rows(table)
        # Two appends: more than one data file per table, as in a real warehouse.
        half = data[table].num_rows // 2
        wh.append(table, data[table].slice(0, half))
        wh.append(table, data[table].slice(half))
    return data


def _build(path: Path, value_types: dict | None = None) -> tuple[LocalWarehouse, dict[str, pa.Table]]:
    wh = LocalWarehouse(path)
    return wh, fill(wh, value_types)


@pytest.fixture(scope="module", params=["64-bit", "32-bit"])
def tiny(request, tmp_path_factory) -> tuple[LocalWarehouse, dict[str, pa.Table]]:
    """(warehouse, appended data), with float64/int64 or float32/int32 value columns."""
    types = None if request.param == "64-bit" else {"beta": pa.float32(), "coverage": pa.int32()}
    wh, data = _build(tmp_path_factory.mktemp(f"tiny-{request.param}"), types)
    if types:  # what the warehouse really holds is the narrowed value
        data = {t: d.set_column(3, t, d[t].cast(types[t])) for t, d in data.items()}
    return wh, data


def _expected(data: pa.Table, table: str, batches: dict[str, list[str]]) -> dict[str, set[tuple]]:
    """Independent answer: filter the appended rows in Python."""
    out: dict[str, set[tuple]] = {b: set() for b in batches}
    for row in data.to_pylist():
        if row["sample_id"] in batches.get(row["batch_id"], []):
            out[row["batch_id"]].add((row["sample_id"], row["cpg_id"], float(row[table])))
    return out


def _read_export(export) -> dict[str, set[tuple]]:
    got: dict[str, set[tuple]] = {}
    for batch_id, files in export.files.items():
        rows = []
        for f in files:
            t = pq.read_table(f)
            assert t.schema.names == ["sample_id", "cpg_id", "value"]
            assert t.schema.types == [pa.string(), pa.string(), pa.float64()]
            rows += [(r["sample_id"], r["cpg_id"], r["value"]) for r in t.to_pylist()]
        # The warehouse holds no duplicate rows, so neither may the export.
        assert len(rows) == len(set(rows)), f"duplicate rows exported for batch {batch_id!r}"
        got[batch_id] = set(rows)
    return got


# ----------------------------------------------------------------- laziness


def test_constructor_touches_nothing(tmp_path):
    path = tmp_path / "not" / "yet"
    wh = LocalWarehouse(path)
    assert wh.describe() == "file://" + str(path)
    assert not path.exists()
    with pytest.raises(WarehouseError, match=r"no Iceberg catalog at .*catalog\.db.*build_cohort"):
        wh.cpgs()
    with pytest.raises(WarehouseError, match="no Iceberg catalog"):
        wh.export("beta", {"B1": ["S1"]})
    assert not path.exists(), "a read must not create the warehouse"


def test_relative_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert LocalWarehouse("wh").describe() == "file://" + str(tmp_path / "wh")


def test_import_is_light():
    code = (
        "import sys, xr_methyl.warehouse.local, xr_methyl.warehouse;"
        "print(sorted(m for m in ('pyiceberg', 'duckdb', 'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_is_a_warehouse_and_pickles(tiny):
    wh, _ = tiny
    assert isinstance(wh, Warehouse)
    wh.cpgs()  # opens the catalog
    again = pickle.loads(pickle.dumps(wh))
    assert again.describe() == wh.describe()
    assert again.cpgs().equals(wh.cpgs())


# ------------------------------------------------------------------- cpgs


def test_chrom_sort_key():
    names = ["chrM", "chr10", "chrY", "3", "chr2", "chrX", "chr1", "scaffold_9", "chrMT", "chr22", "alt_1"]
    assert sorted(names, key=chrom_sort_key) == [
        "chr1", "chr2", "3", "chr10", "chr22", "chrX", "chrY", "chrM", "chrMT", "alt_1", "scaffold_9",
    ]  # fmt: skip


def test_cpgs_in_genome_order(tiny):
    wh, _ = tiny
    cpgs = wh.cpgs()
    assert cpgs.schema == pa.schema([("cpg_id", pa.string()), ("chrom", pa.string()), ("pos", pa.int64())])
    assert cpgs["cpg_id"].to_pylist() == CPG_ORDER
    by_id = {c[0]: c for c in CPGS}
    assert [tuple(r.values()) for r in cpgs.to_pylist()] == [by_id[c] for c in CPG_ORDER]


# -------------------------------------------------------------- resolve_samples


def test_resolve_samples(tiny):
    wh, _ = tiny
    asked = ["Zoë 漢字", "nobody", INJECTION, "S1", "O'Brien", 'x"y']
    got = wh.resolve_samples(asked)
    assert got.column_names == ["sample_id", "batch_id", "age", "sex"]
    assert got.schema.field("sample_id").type == pa.string()
    assert got.schema.field("batch_id").type == pa.string()
    expected = [(s, *SAMPLES[s]) for s in asked if s in SAMPLES]
    assert [tuple(r.values()) for r in got.to_pylist()] == expected


def test_resolve_samples_empty_and_unknown(tiny):
    wh, _ = tiny
    assert wh.resolve_samples([]).num_rows == 0
    assert wh.resolve_samples(["nope", "S1x"]).num_rows == 0
    with pytest.raises(DataError, match="surrounding whitespace"):
        wh.resolve_samples([" S1"])


def test_sample_in_two_batches_is_a_data_error(tmp_path):
    wh = LocalWarehouse(tmp_path)
    wh.create_tables()
    wh.append("sample_batch_map", pa.table({"sample_id": ["S1", "S2", "S1"], "batch_id": ["B1", "B1", "B2"]}))
    assert wh.resolve_samples(["S2"]).num_rows == 1
    with pytest.raises(DataError, match=r"'S1' -> \['B1', 'B2'\]"):
        wh.resolve_samples(["S2", "S1"])


# ------------------------------------------------------------------ export


@pytest.mark.parametrize("table", ["beta", "coverage"])
def test_export_exactly_the_requested_pairs(tiny, table):
    wh, data = tiny
    batches = {
        "B1": ["S1"],  # S1 also has stray rows under "plate 2/A=1%": they must not come back
        "plate 2/A=1%": ["O'Brien", "Zoë 漢字"],
        INJECTION: ['x"y', "nobody"],
        "é 漢": [],  # a batch asked for with no samples
        "no such batch": ["S2"],
    }
    with wh.export(table, batches) as export:
        assert export.table == table
        assert list(export.files) == list(batches)
        got = _read_export(export)
        expected = _expected(data[table], table, batches)
        assert got == expected
        assert export.files["é 漢"] == [] and export.files["no such batch"] == []
        assert export.provenance["engine"] == "duckdb"
        assert export.provenance["rows"] == sum(len(v) for v in expected.values()) > 0
        assert isinstance(export.provenance["seconds"], float)
        # Exported files read back through the Export helpers too.
        n = sum(b.num_rows for b in export.read("plate 2/A=1%"))
        assert n == len(expected["plate 2/A=1%"])


def test_export_all_odd_batch_ids_round_trip(tiny):
    wh, data = tiny
    batches = {b: [s for s, v in SAMPLES.items() if v[0] == b] for b in ODD_BATCHES}
    with wh.export("beta", batches) as export:
        assert set(export.files) == set(ODD_BATCHES)
        assert all(export.files[b] for b in ODD_BATCHES), "every batch has rows"
        assert _read_export(export) == _expected(data["beta"], "beta", batches)


def test_export_duplicate_samples_are_exported_once(tiny):
    wh, data = tiny
    with wh.export("beta", {"B1": ["S2", "S2"]}) as export:
        assert _read_export(export) == _expected(data["beta"], "beta", {"B1": ["S2"]})


def test_export_prunes_partitions(tiny, monkeypatch):
    wh, _ = tiny
    planned: list[list[str]] = []
    real_plan = LocalWarehouse._plan

    def spy(self, table, columns, batch_ids=None):
        scan, paths, n = real_plan(self, table, columns, batch_ids)
        planned.append(paths)
        return scan, paths, n

    monkeypatch.setattr(LocalWarehouse, "_plan", spy)
    with wh.export("coverage", {"plate 2/A=1%": ["O'Brien"]}) as export:
        assert export.provenance["reader"] == "parquet"
        assert export.provenance["data_files"] == len(planned[-1])
    paths = planned[-1]
    assert paths, "the batch has data files"
    for p in paths:  # every file DuckDB was given holds that batch only
        assert set(pq.read_table(p, columns=["batch_id"])["batch_id"].to_pylist()) == {"plate 2/A=1%"}
    all_files = [p for p in Path(wh.warehouse_dir, "methylation", "coverage").rglob("*.parquet")]
    assert len(paths) < len(all_files)


def test_export_unknown_table(tiny):
    wh, _ = tiny
    with pytest.raises(ValueError, match=r"unknown value table 'meth'.*\['beta', 'coverage'\]"):
        wh.export("meth", {"B1": ["S1"]})


def test_export_rejects_bad_ids(tiny):
    wh, _ = tiny
    with pytest.raises(DataError, match="batch id"):
        wh.export("beta", {"": ["S1"]})
    with pytest.raises(TypeError):
        wh.export("beta", {"B1": "S1"})


def test_cleanup_removes_staging(tiny, tmp_path):
    wh, _ = tiny
    staged = LocalWarehouse(wh.path, staging_dir=tmp_path / "stage")
    export = staged.export("beta", {"B1": ["S1", "S2"]})
    files = export.files["B1"]
    assert files and all(Path(f).is_relative_to(tmp_path / "stage") for f in files)
    (staging,) = list((tmp_path / "stage").iterdir())
    assert staging.name.startswith("xr-methyl-export-")
    export.close()
    assert not staging.exists()
    assert list((tmp_path / "stage").iterdir()) == []


def test_empty_tables(tmp_path):
    wh = LocalWarehouse(tmp_path)
    wh.create_tables()
    assert wh.cpgs().num_rows == 0
    assert wh.cpgs().column_names == ["cpg_id", "chrom", "pos"]
    assert wh.resolve_samples(["S1"]).num_rows == 0
    with wh.export("beta", {"B1": ["S1"], "B2": ["S2"]}) as export:
        assert export.files == {"B1": [], "B2": []}
        assert export.provenance["rows"] == 0
    with wh.export("beta", {}) as export:
        assert export.files == {}


def test_evolved_schema_reads_through_pyiceberg(tmp_path):
    """After a rename the Parquet files carry the old column name: the direct path would be wrong."""
    from pyiceberg.catalog.sql import SqlCatalog

    wh = LocalWarehouse(tmp_path)
    wh.create_tables()
    catalog = SqlCatalog("xr_methyl", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"file://{tmp_path}/warehouse")
    catalog.drop_table("methylation.beta")
    old = pa.table(
        {"batch_id": ["B1", "B1", "B2"], "sample_id": ["S1", "S1", "S2"], "cpg_id": ["c1", "c2", "c1"],
         "b": [0.1, 0.2, 0.3]}
    )  # fmt: skip
    ice = catalog.create_table("methylation.beta", schema=old.schema)
    ice.append(old)
    with pytest.raises(WarehouseError, match=r"no column\(s\) \['beta'\]"):
        wh.export("beta", {"B1": ["S1"]})
    with ice.update_schema() as update:
        update.rename_column("b", "beta")
    with wh.export("beta", {"B1": ["S1"]}) as export:
        assert export.provenance["reader"] == "pyiceberg"
        assert _read_export(export) == {"B1": {("S1", "c1", 0.1), ("S1", "c2", 0.2)}}


# ------------------------------------------------------------------ errors


def test_missing_namespace_table_and_column(tmp_path):
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("xr_methyl", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"file://{tmp_path}/warehouse")
    wh = LocalWarehouse(tmp_path)
    with pytest.raises(WarehouseError, match=r"no namespace 'methylation'.*create_tables"):
        wh.cpgs()
    catalog.create_namespace("methylation")
    catalog.create_table("methylation.cpgs", schema=pa.schema([("cpg_id", pa.string()), ("chrom", pa.string())]))
    with pytest.raises(WarehouseError, match=r"no table methylation\.coverage.*\['cpgs'\].*create_tables"):
        wh.export("coverage", {"B1": ["S1"]})
    with pytest.raises(WarehouseError, match=r"methylation\.sample_batch_map"):
        wh.resolve_samples(["S1"])
    with pytest.raises(WarehouseError, match=r"no column\(s\) \['pos'\]"):
        wh.cpgs()


def test_tables_of_another_catalog_name_are_invisible(tmp_path):
    from pyiceberg.catalog.sql import SqlCatalog

    other = SqlCatalog("other", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"file://{tmp_path}/warehouse")
    other.create_namespace("methylation")
    with pytest.raises(WarehouseError, match="no namespace 'methylation'"):
        LocalWarehouse(tmp_path).cpgs()


def test_create_tables_twice(tmp_path):
    wh = LocalWarehouse(tmp_path)
    wh.create_tables()
    with pytest.raises(WarehouseError, match=r"methylation\.\w+ already exists.*exist_ok=True"):
        wh.create_tables()
    wh.create_tables(exist_ok=True)
    with pytest.raises(ValueError, match="float or integer"):
        LocalWarehouse(tmp_path / "x").create_tables(value_types={"beta": pa.string()})


def test_append_checks_columns(tmp_path):
    wh = LocalWarehouse(tmp_path)
    wh.create_tables()
    with pytest.raises(ValueError, match=r"missing \['pos'\], unexpected \['position'\]"):
        wh.append("cpgs", pa.table({"cpg_id": ["a"], "chrom": ["chr1"], "position": [1]}))
    with pytest.raises(ValueError, match="unknown table 'cpg'"):
        wh.append("cpg", pa.table({"cpg_id": ["a"]}))
    # Column order and integer widths need not match: append casts.
    wh.append("cpgs", pa.table({"pos": pa.array([5], pa.int32()), "chrom": ["chr1"], "cpg_id": ["chr1:5"]}))
    assert wh.cpgs().to_pylist() == [{"cpg_id": "chr1:5", "chrom": "chr1", "pos": 5}]


def test_describe_has_no_secret_and_reopens(tiny):
    from xr_methyl.warehouse import open_warehouse

    wh, _ = tiny
    again = open_warehouse(wh.describe())
    assert isinstance(again, LocalWarehouse) and again.path == wh.path
    assert os.path.isabs(wh.describe().removeprefix("file://"))
