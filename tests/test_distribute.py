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
