"""The benchmark runs and writes its results (a smoke test: nothing about time is asserted)."""

import json

import pytest


@pytest.mark.slow
def test_quick_benchmark_writes_results(tmp_path):
    from benchmarks.run import main

    result = main(["--quick", "--out", str(tmp_path)])
    files = list(tmp_path.glob("*-quick.json"))
    assert len(files) == 1
    written = json.loads(files[0].read_text())
    assert written == result
    assert set(written["train_examples_per_second"]) == {"seed", "plain_keras", "tfkit"}
    assert all(v > 0 for v in written["train_examples_per_second"].values())
    assert written["machine"]["cores"] >= 1
