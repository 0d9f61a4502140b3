"""``model.fit`` under ``MultiWorkerMirroredStrategy`` on Keras 3: two narrow fixes.

As of Keras 3.15 / TensorFlow 2.21, ``fit``/``evaluate`` under a multi-worker
``MultiWorkerMirroredStrategy`` fail in two places (keras-team/keras#20585):

1. ``TensorFlowTrainer._maybe_symbolic_build`` takes the first batch and averages it
   across replicas with ``strategy.reduce("MEAN", batch)`` to learn the input shapes.
   The collective strategy cannot convert the ``PerReplica`` batch ("Attempt to
   convert a value (PerReplica:...) with an unsupported type"), and averaging token
   ids would be meaningless anyway. Building needs only the shapes and dtypes of one
   replica's batch, so the fix builds from the first local replica's value. The same
   mean fails under ``MirroredStrategy`` when the first batch divides unequally over the
   replicas (a validation split smaller than the batch: 9 examples on two replicas are 5
   and 4, "Inputs to operation AddN must have the same size"): fix 1 applies under any
   strategy of several replicas.
2. ``reduce_per_replica(..., "auto")`` reduces the per-replica logs with
   ``strategy.reduce("MEAN", v, axis=0)``; the logs are scalars, so TensorFlow fails
   with "Invalid reduction dimension 0 for input with 0 dimensions"
   (tensorflow/tensorflow#72388). The fix reduces them with ``axis=None``: the
   element-wise mean over all replicas of all workers, which is what the
   single-worker path (``tf.reduce_mean`` over local results, ``axis=0``) computes.

:func:`distributed_fit_fixes` applies them only while a strategy of several replicas trains
(fix 2 only for a multi-worker one) and restores Keras afterwards; nothing changes on one
device.
``tests/test_multiworker.py`` checks, against the installed Keras, that unpatched
``fit`` still fails (when a Keras release fixes it, that test fails: drop this
module) and that patched ``fit`` gives identical losses on two real workers.
"""

from __future__ import annotations

import contextlib
import logging

import keras
import numpy as np
import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer as tf_trainer

from tfkit.distribute import is_multi_worker

log = logging.getLogger("tfkit")

# Keras releases on which the two failures were reproduced (see tests/test_multiworker.py)
TESTED_KERAS = ("3.13", "3.14", "3.15")


def _local_value(value, strategy):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    """Keras' method, building from the first local replica's batch instead of a
    cross-replica mean of the batch (fix 1)."""
    if iterator is not None:
        for _, _, it in iterator:
            data_batch = tree.map_structure(
                lambda v: _local_value(v, self.distribute_strategy), next(it))
            break
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def _reduce_per_replica(original):
    def reduce_per_replica(values, strategy, reduction):
        """Scalar logs are averaged over all replicas with ``axis=None`` (fix 2)."""
        if reduction in ("auto", "mean") and is_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    return reduce_per_replica


class BackupsAgree(keras.callbacks.Callback):
    """Brings a restarted multi-worker run whose workers restored different epochs back in step.

    Each worker restores its own BackupAndRestore state. A worker killed between the
    epoch-end writes of two workers resumes one epoch behind the others, with other weights,
    and the job would silently train inconsistent replicas. Placed after
    ``BackupAndRestore``, this callback gathers the restored epoch of every replica; if they
    differ, the first replica holding the newest backup broadcasts its state (the model's
    variables and the optimizer's: one all-reduce each, every other replica adding zeros, so
    the values arrive bit for bit) and every worker continues from that epoch.
    """

    def on_train_begin(self, logs=None):
        strategy = self.model.distribute_strategy
        mine = int(self.model._initial_epoch or 0)  # set by BackupAndRestore, read by fit
        epochs = strategy.gather(strategy.run(lambda: tf.constant([mine])), axis=0).numpy()
        newest = int(epochs.max())
        if (epochs == newest).all():
            return
        source = int(np.argmax(epochs))  # replica ids are the gathered order
        log.warning("the workers' backups hold epochs %s (a worker died between two backup "
                    "writes): every worker continues from epoch %d with replica %d's state.",
                    epochs.tolist(), newest, source)

        optimizer = self.model.optimizer
        broadcast(strategy, [*self.model.variables, *(optimizer.variables if optimizer else [])],
                  source)
        self.model._initial_epoch = newest


def broadcast(strategy, variables, source: int = 0) -> None:
    """Sets ``variables`` on every replica to replica ``source``'s values: one all-reduce per
    variable, every other replica adding zeros, so the values arrive bit for bit (float64
    on the wire: collectives sum floats, and int64 counters fit)."""

    def chosen(value):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        value = tf.cast(value, tf.float64)
        return tf.where(tf.equal(replica, source), value, tf.zeros_like(value))

    for variable in variables:
        total = strategy.reduce("SUM", strategy.run(chosen, args=(variable.value,)), axis=None)
        variable.assign(tf.cast(total, variable.dtype))


@contextlib.contextmanager
def distributed_fit_fixes(strategy):
    """Applies the fixes while the block runs: fix 1 under any strategy of several replicas,
    fix 2 under a multi-worker one.

    Examples:
        >>> strategy = tf.distribute.get_strategy()  # MultiWorkerMirroredStrategy in a cluster
        >>> with strategy.scope():
        ...     model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        ...     model.compile("adam", "mse")
        >>> with distributed_fit_fixes(strategy):  # does nothing on one device
        ...     history = model.fit(np.zeros((8, 3)), np.zeros((8, 2)), epochs=2, verbose=0)
        >>> len(history.history["loss"])
        2
    """
    if not is_multi_worker(strategy) and strategy.num_replicas_in_sync == 1:
        yield
        return
    version = ".".join(keras.__version__.split(".")[:2])
    if version not in TESTED_KERAS:
        log.warning("Keras %s is newer than the releases tfkit's multi-worker fixes were "
                    "tested on (%s); applying them anyway (see tfkit/multiworker.py).",
                    keras.__version__, ", ".join(TESTED_KERAS))
    trainer_cls = tf_trainer.TensorFlowTrainer
    saved = trainer_cls._maybe_symbolic_build, tf_trainer.reduce_per_replica
    trainer_cls._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = _reduce_per_replica(saved[1])
    try:
        yield
    finally:
        trainer_cls._maybe_symbolic_build, tf_trainer.reduce_per_replica = saved
