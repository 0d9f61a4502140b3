"""Strategy resolution: `auto` decides from the environment it is shown."""

import json

import pytest

from tfkit.distribute import StrategyError, choose_strategy, cluster_size, resolve_strategy

TWO_WORKERS = json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                          "task": {"type": "worker", "index": 0}})


@pytest.mark.parametrize("gpus, tf_config, tpu, expected", [
    (0, None, None, "default"),
    (1, None, None, "one_device"),
    (4, None, None, "mirrored"),
    (4, TWO_WORKERS, None, "multi_worker"),
    (0, None, "local", "tpu"),
    (2, TWO_WORKERS, "my-tpu", "tpu"),
])
def test_auto_picks_from_the_environment(gpus, tf_config, tpu, expected):
    chosen, reason = choose_strategy("auto", gpus=gpus, tf_config=tf_config, tpu=tpu)
    assert chosen == expected and reason


def test_explicit_names_are_kept_and_unknown_refused():
    assert choose_strategy("mirrored", gpus=0, tf_config=None, tpu=None)[0] == "mirrored"
    with pytest.raises(StrategyError, match="train.strategy must be one of"):
        choose_strategy("gpu", gpus=0, tf_config=None, tpu=None)


def test_cluster_size():
    assert cluster_size(None) == 0
    assert cluster_size(TWO_WORKERS) == 2
    with pytest.raises(StrategyError, match="TF_CONFIG is not valid JSON"):
        cluster_size("{nope")


def test_default_here_is_the_cpu(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    assert resolve_strategy("auto").num_replicas_in_sync == 1


def test_tpu_without_a_tpu_is_a_clear_error():
    with pytest.raises(StrategyError, match="no TPU could be reached at 'no-such-tpu'"):
        resolve_strategy("tpu", tpu="no-such-tpu")


def test_config_devices_and_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = resolve_strategy("mirrored", devices=["/cpu:0"])
    assert strategy.num_replicas_in_sync == 1
    assert "CPU:0" in strategy.extended.worker_devices[0]
    cluster = {"cluster": {"worker": ["localhost:1", "localhost:2"]},
               "task": {"type": "worker", "index": 0}}
    import os
    try:
        resolve_strategy("default", tf_config=cluster)
        assert json.loads(os.environ["TF_CONFIG"]) == cluster  # where MultiWorkerMirrored reads it
    finally:
        os.environ.pop("TF_CONFIG", None)


def test_precision_and_jit_switches():
    from tfkit.compiling import jit_setting
    from tfkit.config import ConfigError, load_config

    config = load_config(None, ["train.mixed_precision=mixed_float16", "train.jit_compile=true"])
    assert config.train.jit_compile == "true"
    assert jit_setting(config, replicas=1) is True
    with pytest.raises(ConfigError, match="keras-team/keras#21366"):
        jit_setting(config, replicas=2)
    auto = load_config(None, ["train.mixed_precision=mixed_float16"])
    assert jit_setting(auto, replicas=2) is False  # auto steps around the crash
    assert jit_setting(load_config(None, ["train.jit_compile=false"]), replicas=1) is False
    with pytest.raises(ConfigError, match="train.mixed_precision must be one of none, "
                                          "mixed_float16, mixed_bfloat16; got 'float16'"):
        load_config(None, ["train.mixed_precision=float16"])
    with pytest.raises(ConfigError, match="train.jit_compile must be one of auto, true, false"):
        load_config(None, ["train.jit_compile=xla"])


def test_mixed_precision_run_trains_exports_and_restores_the_policy(tiny_csv):
    import keras
    import tensorflow as tf
    from conftest import tiny_overrides

    import tfkit
    from tfkit.served import load_serving

    result = tfkit.train(None, tiny_overrides(tiny_csv, extra=["train.mixed_precision=mixed_bfloat16",
                                                            "export.enabled=true"]))
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    assert result.model.get_layer("lstm_1").dtype_policy.name == "mixed_bfloat16"
    _, signature, _ = load_serving(result.export_path)
    out = signature(text=tf.constant(["great taste", ""]))
    assert out["probabilities"].dtype == tf.float32


def test_bad_devices_and_unreachable_tpu_exit_cleanly_from_the_cli(workdir):
    import subprocess
    import sys

    for sets in (["train.strategy=tpu", "train.tpu=no-such-tpu"],
                 ["train.strategy=mirrored", 'train.devices=["/cpu:0", "/cpu:0"]']):
        done = subprocess.run([sys.executable, "-m", "tfkit.cli", "train"]
                              + [a for s in sets for a in ("--set", s)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stderr.strip().splitlines()[-1].startswith("tfkit: error: train.")
        assert "Traceback" not in done.stderr
        assert not (workdir / "runs").exists()
