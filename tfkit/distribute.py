"""Resolves ``train.strategy`` to a ``tf.distribute.Strategy`` and says why.

Names: ``auto``, ``default``, ``one_device``, ``mirrored``, ``multi_worker``, ``tpu``.
``auto`` picks, in order: TPU when a TPU cluster resolves (``TPU_NAME`` set or
``tpu`` given), multi-worker when ``TF_CONFIG`` names more than one task, mirrored
when more than one GPU is visible, one-device on the single GPU, else the default
strategy (the CPU).
"""

from __future__ import annotations

import functools
import json
import logging
import os

import tensorflow as tf

from tfkit.config import STRATEGIES

log = logging.getLogger("tfkit")


class StrategyError(ValueError):
    """The requested strategy cannot run here; the message says why and what to do."""


def cluster_size(tf_config: str | None) -> int:
    """Number of workers (chief included) that a ``TF_CONFIG`` JSON string names."""
    if not tf_config:
        return 0
    try:
        cluster = json.loads(tf_config).get("cluster", {})
    except (json.JSONDecodeError, AttributeError):
        raise StrategyError(f"TF_CONFIG is not valid JSON: {tf_config!r}") from None
    return sum(len(cluster.get(role, [])) for role in ("chief", "worker"))


def choose_strategy(name: str, *, gpus: int, tf_config: str | None, tpu: str | None) -> tuple[str, str]:
    """Decides which strategy ``name`` means in an environment, without creating it.

    Args:
        name: one of :data:`STRATEGIES`.
        gpus: number of visible GPUs.
        tf_config: the ``TF_CONFIG`` JSON, or None.
        tpu: a TPU name/address (``local`` for a TPU VM), or None.

    Returns:
        ``(strategy name, reason)``.

    Examples:
        >>> choose_strategy("auto", gpus=2, tf_config=None, tpu=None)[0]
        'mirrored'
    """
    if name not in STRATEGIES:
        raise StrategyError(f"train.strategy must be one of {', '.join(STRATEGIES)}; got {name!r}.")
    if name != "auto":
        return name, "requested in train.strategy"
    if tpu:
        return "tpu", f"a TPU was named ({tpu!r})"
    workers = cluster_size(tf_config)
    if workers > 1:
        return "multi_worker", f"TF_CONFIG names {workers} workers"
    if gpus > 1:
        return "mirrored", f"{gpus} GPUs are visible"
    if gpus == 1:
        return "one_device", "one GPU is visible"
    return "default", "no GPU, TPU or TF_CONFIG cluster: training on the CPU"


def is_multi_worker(strategy) -> bool:
    """True for a collective (MultiWorkerMirrored) strategy spanning more than one worker."""
    return bool(isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                and strategy.extended._in_multi_worker_mode())  # noqa: SLF001 (as Keras checks it)


def task_id(strategy) -> int:
    """This worker's index in its TF_CONFIG role (0 outside a cluster)."""
    if not is_multi_worker(strategy):
        return 0
    return int(strategy.cluster_resolver.task_id or 0)


def worker_count(strategy) -> int:
    """The input pipelines a strategy runs: one per worker (chief included), 1 outside a cluster."""
    if not is_multi_worker(strategy):
        return 1
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(spec.get(role, [])) for role in ("chief", "worker"))


def pipeline_index(strategy) -> int:
    """This worker's input pipeline in ``[0, worker_count)``: the chief first, then the workers."""
    if not is_multi_worker(strategy):
        return 0
    resolver = strategy.cluster_resolver
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief":
        return 0
    return task_id(strategy) + (1 if has_chief else 0)


def is_chief(strategy) -> bool:
    """Whether this process writes the run's outputs: always outside a cluster; in one, the
    ``chief`` task, or worker 0 when TF_CONFIG names no chief."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and task_id(strategy) == 0
            and "chief" not in resolver.cluster_spec().as_dict())


def resolve_strategy(name: str = "auto", *, tpu: str | None = None, devices=None,
                     tf_config: dict | None = None) -> tf.distribute.Strategy:
    """Creates the strategy ``name`` resolves to here, logging the choice and the reason.

    Args:
        name: one of :data:`STRATEGIES` (``train.strategy``).
        tpu: ``local`` or a TPU name (``train.tpu``; default ``$TPU_NAME``).
        devices: devices for ``mirrored``/``one_device`` (``train.devices``; default all GPUs,
            else the CPUs).
        tf_config: the cluster as a dict (``train.tf_config``), used when the environment
            has no ``TF_CONFIG``.

    Raises:
        StrategyError: for an unknown name, or a TPU that cannot be reached.
    """
    if tf_config and not os.environ.get("TF_CONFIG"):
        os.environ["TF_CONFIG"] = json.dumps(tf_config)  # where the cluster resolver reads it
    # physical, not logical devices: listing logical ones starts the TF runtime, and
    # MultiWorkerMirroredStrategy must configure collective ops before that happens
    gpus = tf.config.list_physical_devices("GPU")
    tpu = tpu or os.environ.get("TPU_NAME")
    chosen, reason = choose_strategy(name, gpus=len(gpus), tf_config=os.environ.get("TF_CONFIG"),
                                     tpu=tpu)
    if chosen == "default":
        strategy = tf.distribute.get_strategy()
    elif chosen == "one_device":
        strategy = tf.distribute.OneDeviceStrategy(
            devices[0] if devices else ("/gpu:0" if gpus else "/cpu:0"))
    elif chosen == "mirrored":
        devices = list(devices or []) or (
            [d.name for d in tf.config.list_logical_devices("GPU")]
            or [d.name for d in tf.config.list_logical_devices("CPU")])
        try:
            strategy = mirrored_strategy(tuple(devices))
        except (AssertionError, ValueError, RuntimeError) as exc:
            raise StrategyError(f"train.devices {devices!r} cannot be mirrored: {exc}. Use "
                                "distinct devices such as ['/gpu:0', '/gpu:1'].") from None
    elif chosen == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = _tpu_strategy(tpu or "local")
    log.info("strategy: %s (%s), %d replica(s)", chosen, reason, strategy.num_replicas_in_sync)
    return strategy


@functools.cache
def mirrored_strategy(devices: tuple[str, ...]) -> tf.distribute.MirroredStrategy:
    """One ``MirroredStrategy`` per set of devices in a process, reused by every run: a second
    one over the same devices numbers its collective operations from the start again, and
    TensorFlow's runtime, which keeps each collective's shapes by those numbers, then fails
    the first all-gather whose shape differs (``Shape mismatch in the collective instance``:
    seen when a notebook trained two models with sparse embedding gradients in turn)."""
    return tf.distribute.MirroredStrategy(list(devices))


def _tpu_strategy(tpu: str) -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, OSError, tf.errors.OpError, RuntimeError) as exc:  # OSError: URLError
        raise StrategyError(f"train.strategy 'tpu': no TPU could be reached at {tpu!r} "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
                            "Use 'local' on a TPU VM, or the TPU name on Cloud.") from None
    return tf.distribute.TPUStrategy(resolver)
