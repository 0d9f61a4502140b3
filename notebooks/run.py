"""Executes the notebooks top to bottom at their real settings and saves them with their outputs.

    python -m notebooks.run                      # every notebook
    python -m notebooks.run 03_image_cnn         # one (or several) by name

Each notebook runs in a fresh kernel in an empty temporary folder (its runs, exports and
files never land in the checkout), with fixed seeds. What would change from one machine or
one run to the next is left out of the saved outputs: execution timestamps, the temporary
folder's path (written as ``.``), run folders' time stamps (``YYYYMMDD-HHMMSS``), memory
addresses and TensorFlow's own log lines. The notebook's metadata keeps a hash
of its code cells (``tfkit.code_sha256``): the tests fail when a code cell is edited and the
notebook is not run again, so the outputs a reader sees always come from the code above them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import nbformat

FOLDER = Path(__file__).resolve().parent
# one PNG per figure, small enough to keep each notebook well under a megabyte (the kernel
# reads this from the IPython folder the runner gives it)
KERNEL_CONFIG = ("c.InlineBackend.figure_formats = {'png'}\n"
                 "c.InlineBackend.rc = {'figure.dpi': 72, 'savefig.dpi': 72}\n")
ADDRESS = re.compile(r" at 0x[0-9a-f]+")
RUN_FOLDER = re.compile(r"(?<=[/'\"-])\d{8}-\d{6}(?=[-/\s'\"]|$)")  # run folders' time stamps
# TensorFlow's own log lines in a kernel's streams: its C++ start-up lines (time-stamped, the
# process id) and the SavedModel writer's (the temporary folder of each export)
TENSORFLOW_LINE = re.compile(r"^([IWEF]\d{4} [\d:.]+ +\d+ \S+\] .*"
                             r"|WARNING: All log messages before absl::InitializeLog\(\).*"
                             r"|INFO:tensorflow:.*)\n?", re.MULTILINE)
RUN_TIME = re.compile(r"\n*\*Run top to bottom in about .*\*$")


def notebooks(names=()) -> list[Path]:
    """The notebooks in this folder, or those whose file name starts with one of ``names``.

    Raises:
        ValueError: naming a name no notebook starts with, and the notebooks there are.
    """
    found = sorted(FOLDER.glob("*.ipynb"))
    if not names:
        return found
    missing = [name for name in names if not any(p.name.startswith(name) for p in found)]
    if missing:
        raise ValueError(f"no notebook named {', '.join(map(repr, missing))}; there are: "
                         + ", ".join(p.stem for p in found))
    return [path for path in found if any(path.name.startswith(name) for name in names)]


def code_sha256(notebook) -> str:
    """A hash of the notebook's code cells, in order (outputs and markdown left out)."""
    digest = hashlib.sha256()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            digest.update(cell.source.strip().encode("utf-8") + b"\0")
    return digest.hexdigest()


def _clean_text(text: str, folder: str) -> str:
    text = text.replace(os.path.realpath(folder), ".").replace(folder, ".")
    # a library's warning names its file: this machine's Python environment, left out
    text = text.replace(sysconfig.get_paths()["purelib"], "<site-packages>")
    return RUN_FOLDER.sub("YYYYMMDD-HHMMSS", ADDRESS.sub("", text))


def clean_outputs(notebook, folder: str) -> None:
    """Drops what differs between machines and runs from every output, in place."""
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                output["text"] = TENSORFLOW_LINE.sub("", output["text"])
            if "text" in output:
                output["text"] = _clean_text(output["text"], folder)
            for kind, value in output.get("data", {}).items():
                if kind.startswith("text/") and isinstance(value, str):
                    output["data"][kind] = _clean_text(value, folder)
        cell.outputs = [o for o in cell.get("outputs", [])
                        if o.output_type != "stream" or o["text"].strip()]


def say_run_time(notebook, minutes: float) -> None:
    """Writes the run time at the end of the notebook's first (markdown) cell."""
    first = notebook.cells[0]
    cores = os.cpu_count()
    first.source = (RUN_TIME.sub("", first.source.rstrip())
                    + f"\n\n*Run top to bottom in about {max(1, round(minutes))} minute"
                    + f"{'s' if round(minutes) > 1 else ''} on {cores} CPU core"
                    + f"{'s' if cores > 1 else ''} (the outputs below are from that run).*")


def run_notebook(path: Path, timeout: int = 3600) -> float:
    """Executes ``path`` in a fresh kernel and writes it back with its outputs; returns the
    minutes it took."""
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    with tempfile.TemporaryDirectory(prefix="tfkit-notebook-") as folder, \
            tempfile.TemporaryDirectory(prefix="tfkit-ipython-") as ipython:
        profile = Path(ipython, "profile_default")
        profile.mkdir()
        (profile / "ipython_kernel_config.py").write_text(KERNEL_CONFIG)
        env_before = dict(os.environ)
        os.environ.update(PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="2", IPYTHONDIR=ipython)
        os.environ.pop("TFKIT_QUICK", None)
        started = time.perf_counter()
        try:
            NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                           resources={"metadata": {"path": folder}}).execute()
        finally:
            os.environ.clear()
            os.environ.update(env_before)
        minutes = (time.perf_counter() - started) / 60
        clean_outputs(notebook, folder)
    notebook.metadata["tfkit"] = {"code_sha256": code_sha256(notebook)}
    say_run_time(notebook, minutes)
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, path)
    return minutes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook file names (or their starts)")
    args = parser.parse_args(argv)
    try:
        chosen = notebooks(args.names)
    except ValueError as exc:
        parser.error(str(exc))  # exit 2, nothing run
    for path in chosen:
        print(f"running {path.name} ...", flush=True)
        minutes = run_notebook(path)
        print(f"  {minutes:.1f} minutes, {path.stat().st_size / 1e6:.2f} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
