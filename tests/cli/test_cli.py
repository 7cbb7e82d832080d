"""The xr-methyl command line, run as a user runs it."""

import json
import subprocess
import sys

import pytest


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "xr_methyl.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_demo_runs_end_to_end(tmp_path):
    out = cli("demo", tmp_path / "demo", "--samples", 12, "--cpgs", 3000, "--batch-size", 4, "--subset", 5)
    assert out.returncode == 0, out.stderr
    assert "identical values: True" in out.stdout
    assert "first call pays the warehouse" in out.stdout and "cache only" in out.stdout
    assert "xr_methyl ensure" in out.stderr  # the progress bar
    info = cli("info", tmp_path / "demo" / "cohort.methyl.zarr", "--json")
    assert json.loads(info.stdout)["samples"] == 5
    again = cli("demo", tmp_path / "demo", "--samples", 12, "--cpgs", 3000)
    assert again.returncode == 1 and "--overwrite" in again.stderr


def test_init_ensure_info(own_cohort, tmp_path):
    store = tmp_path / "s.methyl.zarr"
    out = cli("init", store, "--warehouse", own_cohort.warehouse.path)
    assert out.returncode == 0, out.stderr
    assert "500 CpGs" in out.stdout
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("S0002\n\nS0007\n")
    out = cli("ensure", store, "S0001", "--ids-file", ids_file, "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "3 requested: 0 already cached, 3 ingested" in out.stdout
    out = cli("ensure", store, "S0007", "--no-progress")
    assert "1 already cached, 0 ingested" in out.stdout
    out = cli("info", store)
    assert out.returncode == 0
    assert "samples    3 in 2 batch(es)" in out.stdout and "cpgs       500" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("info", "{tmp}/nowhere"),
            ("no methylzarr store at {tmp}/nowhere; create one with: xr-methyl init {tmp}/nowhere --warehouse"),
        ),
        (("ensure", "{tmp}/nowhere", "S1"), "create one with: xr-methyl init {tmp}/nowhere"),
        (("verify", "{tmp}/nowhere"), "create one with: xr-methyl init {tmp}/nowhere"),
        (("gc", "{tmp}/nowhere"), "create one with: xr-methyl init {tmp}/nowhere"),
        (("init", "{tmp}/s", "--warehouse", "{tmp}/empty-warehouse"), "catalog"),
        (("ensure", "{store}", "--no-progress"), "no sample ids"),
        (("ensure", "{store}", "GHOST", "--no-progress"), "'GHOST'"),
    ],
)
def test_user_errors_print_one_line_and_exit_1(own_cohort, tmp_path, args, message):
    store = tmp_path / "store"
    assert cli("init", store, "--warehouse", own_cohort.warehouse.path).returncode == 0
    out = cli(*(a.format(tmp=tmp_path, store=store) for a in args))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(tmp=tmp_path) in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_version():
    import xr_methyl

    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"xr-methyl {xr_methyl.__version__}"
    from importlib.metadata import version

    assert xr_methyl.__version__ == version("xr-methyl")  # the package's and the project's versions agree


def test_the_python_error_for_a_missing_store_says_how_to_create_one(tmp_path):
    from xr_methyl import MethylStore, StoreNotFoundError

    with pytest.raises(StoreNotFoundError, match=r"create one with MethylStore\.create\(.*warehouse="):
        MethylStore.open(tmp_path / "nowhere")
