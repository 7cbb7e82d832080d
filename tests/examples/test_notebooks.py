"""The notebooks run top to bottom without error, and are saved with their outputs.

Each is executed afresh in a ``python3`` kernel (ipykernel in this
interpreter's environment), from the notebooks folder; each builds its own
small synthetic cohort in a temporary folder.
"""

import os
import tempfile
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ["01_quickstart.ipynb", "02_epigenetic_clock.ipynb", "03_distributed_feature_selection.ipynb"]


def test_every_notebook_is_listed():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_without_error(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    assert not _errors(nb)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_saved_with_outputs_and_no_local_paths(name):
    text = (NOTEBOOKS / name).read_text()
    nb = nbformat.reads(text, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "save the notebook executed (notebooks/execute.py)"
    assert not _errors(nb)
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), "no plot in the saved outputs"
    assert any("parameters" in c.metadata.get("tags", []) for c in code), "no parameters cell"
    for local in {str(NOTEBOOKS.parent), os.path.expanduser("~"), tempfile.gettempdir()} - {"/", ""}:
        assert local not in text, f"the saved notebook mentions {local!r}, a path of this machine"


def _errors(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
