"""Every notebook runs top to bottom on its quick path (TFKIT_QUICK=1 keeps it to a few steps),
and every committed notebook carries the outputs of the code it shows."""

import json
import sysconfig
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from notebooks.run import clean_outputs, code_sha256, notebooks

NOTEBOOKS = notebooks()


def test_there_are_notebooks():
    assert len(NOTEBOOKS) == 6


def test_a_name_no_notebook_has_is_refused_before_anything_runs(capsys):
    from notebooks.run import main

    with pytest.raises(SystemExit) as stopped:
        main(["01_text_end_to_end", "no_such"])
    assert stopped.value.code == 2
    assert "no notebook named 'no_such'; there are: 01_text_end_to_end" in capsys.readouterr().err


def test_what_differs_between_runs_is_left_out_of_the_outputs():
    from nbformat.v4 import new_code_cell, new_output

    cell = new_code_cell("print(run)", outputs=[
        new_output("stream", name="stderr", text=(
            "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1796658565.139385   16955 port.cc:153] oneDNN custom operations are on.\n"
            "INFO:tensorflow:Assets written to: /tmp/tfkit-notebook-x1/saved_models/a/.export-z/\n")),
        new_output("stream", name="stderr", text=(
            f"{sysconfig.get_paths()['purelib']}/tqdm/auto.py:21: TqdmWarning: IProgress\n")),
        new_output("stream", name="stdout", text="/tmp/tfkit-notebook-x1/runs/a/20261207-154928 "
                                                 "<Layer at 0x7f3a2b>\n"),
        new_output("execute_result", data={"text/plain": "'/tmp/tfkit-notebook-x1/runs/a'"})])
    cell.metadata["execution"] = {"iopub.execute_input": "2026-12-07T15:49:28"}
    notebook = nbformat.v4.new_notebook(cells=[cell])
    clean_outputs(notebook, "/tmp/tfkit-notebook-x1")
    (warning, stdout, result), = [cell.outputs]
    assert warning.text == "<site-packages>/tqdm/auto.py:21: TqdmWarning: IProgress\n"
    assert stdout.text == "./runs/a/YYYYMMDD-HHMMSS <Layer>\n"
    assert result.data["text/plain"] == "'./runs/a'"
    assert "execution" not in cell.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_come_from_the_code_above_them(path):
    """``python -m notebooks.run`` executed this code: its hash is the one recorded then, every
    code cell has run, and the figures are there, small."""
    notebook = nbformat.read(path, as_version=4)
    recorded = notebook.metadata.get("tfkit", {}).get("code_sha256")
    assert recorded == code_sha256(notebook), (
        f"{path.name}: a code cell changed since its outputs were made; "
        "run `python -m notebooks.run " + path.stem + "`")
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    counts = [cell.execution_count for cell in code]
    assert counts == list(range(1, len(code) + 1))  # top to bottom, in one kernel
    outputs = [o for cell in code for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = json.dumps(notebook)
    assert "/tmp/" not in text and " at 0x" not in text and "tfkit-notebook-" not in text
    assert "/site-packages/" not in text  # a warning's file in this machine's environment
    source = "".join(cell.source for cell in code)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= source.count("plt.show()")
    assert path.stat().st_size < 1_000_000
    first, last = notebook.cells[0], notebook.cells[-1]
    assert first.cell_type == "markdown" and "minute" in first.source.splitlines()[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Where next")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, workdir, monkeypatch):
    monkeypatch.setenv("TFKIT_QUICK", "1")
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    errors = [o for cell in notebook.cells if cell.cell_type == "code"
              for o in cell.outputs if o.output_type == "error"]
    assert not errors
    assert not (Path(path).parent / "runs").exists()
