"""``train.learning_rate: auto``: a learning-rate range test (Smith 2017, "Cyclical Learning
Rates"; fastai's and ktrain's ``lr_find``) picks the rate from the data and the model.

A copy of the freshly built model trains for :data:`STEPS` batches while the learning rate
grows geometrically from :data:`LOWEST` to :data:`HIGHEST`; the training loss, smoothed, falls
and then blows up. The rate chosen is a tenth of the one at the smoothed loss's minimum (the
usual "minimum / 10" rule: the fastest still-stable descent). The model itself is untouched:
training then starts from its initial weights at the chosen rate.
"""

from __future__ import annotations

import logging
import math

import keras
import numpy as np

from tfkit.compiling import build_state

log = logging.getLogger("tfkit")

STEPS = 100  # batches the test trains (the training data repeated when it has fewer)
LOWEST, HIGHEST = 1e-5, 1.0
SMOOTHING = 0.9  # exponential moving average of the loss (bias-corrected)
DIVERGED = 4.0  # stop once the smoothed loss exceeds this times its minimum


class RangeTest(keras.callbacks.Callback):
    """Sets the learning rate of batch ``i`` to ``LOWEST * growth**i`` and records
    ``(rate, smoothed loss)``; stops training when the loss diverges (or is not finite)."""

    def __init__(self, steps: int = STEPS, lowest: float = LOWEST, highest: float = HIGHEST):
        super().__init__()
        self.rates = lowest * (highest / lowest) ** (np.arange(steps) / max(steps - 1, 1))
        self.losses, self.average, self.best = [], 0.0, math.inf

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(float(self.rates[len(self.losses)]))

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", math.nan))
        if not math.isfinite(loss):
            self.model.stop_training = True
            return
        # Keras logs the running mean of the epoch's losses: take back this batch's own
        count = len(self.losses) + 1
        own = loss * count - getattr(self, "_sum", 0.0)
        self._sum = loss * count
        self.average = SMOOTHING * self.average + (1 - SMOOTHING) * own
        smoothed = self.average / (1 - SMOOTHING ** count)
        self.losses.append(smoothed)
        self.best = min(self.best, smoothed)
        if smoothed > DIVERGED * self.best or count >= len(self.rates):
            self.model.stop_training = True


def choose_rate(rates, losses) -> float:
    """A tenth of the rate at the smoothed loss's minimum (ignoring the first tenth of the
    steps, where the average is still settling).

    Examples:
        >>> rates = np.geomspace(1e-5, 1, 11)
        >>> losses = [1.0, 0.99, 0.97, 0.9, 0.7, 0.4, 0.3, 0.5, 2.0, 9.0, 50.0]
        >>> round(choose_rate(rates, losses), 6)  # minimum at 1e-2 -> 1e-3
        0.001
    """
    losses = np.asarray(losses, float)
    start = len(losses) // 10
    best = start + int(np.argmin(losses[start:]))
    return float(rates[best]) / 10


def find_learning_rate(model: keras.Model, compile_copy, dataset, steps: int = STEPS) -> dict:
    """Runs the range test on a copy of ``model`` (same initial weights) compiled by
    ``compile_copy(copy)`` with a constant learning rate, over ``steps`` batches of
    ``dataset`` (repeated). Returns ``{"value", "steps", "rates", "losses"}``: the chosen
    rate and the curve it was read from (rates and smoothed losses, rounded)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    compile_copy(copy)
    build_state(copy, dataset)
    test = RangeTest(steps)
    copy.fit(dataset.repeat(), epochs=1, steps_per_epoch=steps, callbacks=[test], verbose=0,
             shuffle=False)  # the dataset shuffles itself; Keras would warn
    if len(test.losses) < 10:
        raise ValueError("the loss was not finite from the first steps on, at any rate "
                         f"from {LOWEST:g}; set train.learning_rate to a number.")
    rates = test.rates[:len(test.losses)]
    value = choose_rate(rates, test.losses)
    log.info("train.learning_rate auto: %.3g (a tenth of %.3g, where the loss fell lowest in "
             "a range test of %d steps from %g)", value, value * 10, len(test.losses), LOWEST)
    return {"value": value, "steps": len(test.losses),
            "rates": [float(f"{r:.3g}") for r in rates],
            "losses": [round(float(v), 4) for v in test.losses]}
