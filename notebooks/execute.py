"""Re-execute the notebooks in this folder and save them with their outputs.

    python notebooks/execute.py                 # every notebook
    python notebooks/execute.py 02_*.ipynb      # some of them

Runs each one top to bottom in a fresh ``python3`` kernel (the ipykernel of
the interpreter running this script) from this folder, so the saved outputs
are exactly what a reader would get.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def execute(path: Path, *, timeout: int = 600) -> nbformat.NotebookNode:
    """Run one notebook; raise ``nbclient.exceptions.CellExecutionError`` on any error."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    return nb


def main(names: list[str]) -> None:
    paths = [HERE / n for n in names] if names else sorted(HERE.glob("*.ipynb"))
    for path in paths:
        t0 = time.perf_counter()
        nb = execute(path)
        nbformat.write(nb, path)
        print(f"{path.name}: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
