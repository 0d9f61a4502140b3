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
    assert set(written["train_examples_per_second"]) == {
        "seed", "plain_keras", "tfkit", "tfkit_batch_128", "tfkit_xla", "seed_stacked",
        "tfkit_stacked", "tfkit_han", "tfkit_transformer", "tfkit_image_cnn"}
    assert set(written["warmup_epoch_seconds"]) == set(written["train_examples_per_second"])
    assert all(v > 0 for v in written["train_examples_per_second"].values())
    assert written["matmul_peak_gflops"] > 0
    assert written["ratio_tfkit_over_seed_best_rounds"] > 0
    assert written["ratio_tfkit_over_seed_paired_median"] > 0
    assert 0 < written["fraction_of_matmul_peak"]["tfkit"]
    assert set(written["time_to_test_accuracy"]) == {"target", "seed", "tfkit_text_lstm",
                                                     "tfkit_default_preset",
                                                     "tfkit_transformer_preset"}
    serving = written["serving"]
    assert serving["batch1_latency_ms_p50"] <= serving["batch1_latency_ms_p99"]
    assert serving["batch64_raw_strings_examples_per_second"] > 0
    assert written["machine"]["cores"] >= 1
    assert set(written["end_to_end"]) == {"fine_foods_fasttext", "fine_foods_text_lstm"}
    for (run,) in written["end_to_end"].values():
        assert run["bare_fit_seconds"] > 0 and run["tfkit_train_fit_seconds"] > 0
        assert run["tfkit_train_total_seconds"] >= run["tfkit_train_fit_seconds"]


@pytest.mark.slow
def test_quick_thread_benchmark_runs_each_setting_in_its_own_process(tmp_path):
    from benchmarks.threads import main

    result = main(["--quick", "--out", str(tmp_path)])
    files = list(tmp_path.glob("threads-*-quick.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == result
    # the defaults and, where one is installed, another allocator really loaded in its child
    used = result["threads_used"]
    assert used["default"] == {"intra_op": 0, "inter_op": 0, "allocator": "glibc"}
    (other,) = set(used) - {"default"}
    if other == "intra1_inter1":
        assert used[other] == {"intra_op": 1, "inter_op": 1, "allocator": "glibc"}
        assert result["allocators_missing"] == ["jemalloc", "tcmalloc"]
    else:
        assert used[other] == {"intra_op": 0, "inter_op": 0, "allocator": other}
    assert all(v > 0 for v in result["train_examples_per_second"].values())


@pytest.mark.slow
def test_quick_xla_cache_benchmark_reuses_the_programs_it_compiled(tmp_path):
    from benchmarks.xla_cache import main

    result = main(["--quick", "--out", str(tmp_path)])
    files = list(tmp_path.glob("xla-cache-*-quick.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == result
    (cold,), (warm,), (plain,) = (result["runs"][m] for m in ("xla_cold", "xla_warm", "no_xla"))
    assert len(cold["cache_files_written"]) >= 2  # one program per batch shape
    assert all(name.endswith("XLA_CPU_JIT.pb") for name in cold["cache_files_written"])
    # a process that missed the cache would compile again and rewrite its entries
    assert warm["cache_files_written"] == [] and plain["cache_files_written"] == []
    assert all(v > 0 for v in result["later_examples_per_second"].values())


@pytest.mark.slow
def test_quick_step_benchmark_times_every_part(tmp_path):
    from benchmarks.step import main

    result = main(["--quick", "--out", str(tmp_path)])
    files = list(tmp_path.glob("step-*-quick.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == result
    assert result["batch_shape"] == [32, 64]
    assert set(result["ms_per_step"]) == {
        "lstm_unmasked", "lstm", "forward_backward", "with_optimizer", "keras_train_step",
        "keras_train_step_batch_known", "keras_train_step_relaxed"}
    assert all(v > 0 for v in result["ms_per_step"].values())
    assert result["share_of_fit_step"]["keras_train_step_batch_known"] == 1.0
    assert 0 < result["lstm_fraction_of_matmul_peak"] < 1


@pytest.mark.slow
def test_quick_transformer_step_benchmark_times_every_part(tmp_path):
    from benchmarks.transformer_step import main

    result = main(["--quick", "--out", str(tmp_path)])
    files = list(tmp_path.glob("transformer-step-w64-*-quick.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == result
    assert set(result["ms_per_step"]) == {
        "reference_lstm_train_step", "attention", "attention_dropout_0.1", "attention_no_mask",
        "feed_forward", "forward_backward", "keras_train_step_batch_known"}
    assert all(v > 0 for v in result["ms_per_step"].values())
    assert 0 < result["fraction_of_matmul_peak"] < 1
    assert result["ratio_over_reference_lstm_step"] > 0


def test_quick_batching_benchmark_measures_every_batch_size(tmp_path):
    from benchmarks.batching import BATCH_SIZES, main

    result = main(["--quick", "--out", str(tmp_path)])
    (file,) = tmp_path.glob("batching-*-quick.json")
    assert json.loads(file.read_text()) == result
    assert [row["batch_size"] for row in result["rows"]] == list(BATCH_SIZES)
    assert all(row["ms_per_call"] > 0 and row["examples_per_second"] > 0 for row in result["rows"])
    assert result["max_batch_size_for_90_percent"] in BATCH_SIZES


@pytest.mark.slow
def test_quick_compression_benchmark_compares_students_and_int8_exports(tmp_path):
    from benchmarks.compress import main

    result = main(["--quick", "--out", str(tmp_path)])
    files = list(tmp_path.glob("compress-*-quick.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == result
    (distilled,) = result["distillation"].values()  # one teacher in a quick run
    assert len(distilled["student_distilled_test_accuracy"]["values"]) == 1
    assert 0 < distilled["teacher_test_accuracy"]["mean"] <= 1
    serving = distilled["serving"]
    assert serving["student"]["batch1_ms_p50"] <= serving["student"]["batch1_ms_p99"]
    for preset in ("fine_foods_fasttext", "fine_foods_text_lstm"):
        report = result["int8"][preset]
        assert report["int8_bytes"] < report["float_bytes"]  # int8 tables and kernels
        assert "embedding" in report["quantized_layers"]
        assert report["serving"]["int8"]["batch64_examples_per_second"] > 0
    assert result["int8"]["fine_foods_text_lstm"]["float_layers"] == ["lstm_cell"]


@pytest.mark.slow
def test_quick_columns_benchmark_scores_tfkit_and_baselines(tmp_path):
    from benchmarks.columns import main

    path = main(["--quick", "--out", str(tmp_path)])
    result = json.loads(path.read_text())
    tags, table = result["multi_label"], result["text_and_table"]
    assert tags["labels"] == 22 and len(tags["tfkit"]["runs"]) == 1
    for score in (tags["tfkit"]["micro_f1"]["mean"], tags["tfidf_logistic_regression"]["micro_f1"],
                  tags["most_frequent_label_set"]["micro_f1"], table["tfkit"]["accuracy"]["mean"],
                  table["tfkit_title_only"]["accuracy"]["mean"],
                  table["logistic_regression_all_columns"]["accuracy"],
                  table["majority_label"]["accuracy"]):
        assert 0 < score <= 1


@pytest.mark.slow
def test_quick_fasttext_benchmark_measures_tfkit_beside_fasttext(tmp_path, capsys):
    from benchmarks.fasttext import main

    result = main(["--quick", "--out", str(tmp_path)])
    (file,) = tmp_path.glob("fasttext-*-quick.json")
    assert json.loads(file.read_text()) == result
    (row,) = result["sizes"]
    assert row["reviews"] == 3000 and row["tfkit"]["train_examples"] > 0
    assert 0.5 < row["tfkit"]["test_accuracy"] <= 1 and row["tfkit"]["peak_rss_mb"] > 0
    if result["fasttext_installed"]:
        assert row["fasttext"]["train_examples"] == 2700
        assert set(row["ratios"]) == {"train_examples_per_second", "command_seconds",
                                      "peak_rss", "test_accuracy_points"}
    else:  # not a tfkit dependency: said, and tfkit measured alone
        assert "fastText is not installed" in capsys.readouterr().err and "fasttext" not in row


def test_the_fasttext_benchmark_refuses_a_size_it_cannot_generate(tmp_path, capsys):
    from benchmarks.fasttext import main

    with pytest.raises(SystemExit) as stop:
        main(["--sizes", "200000", "50", "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert "--sizes 50: this benchmark generates 1,000 to 5,000,000" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
