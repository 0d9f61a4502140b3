"""Smaller served models: Keras's own int8 quantization of a trained model, checked against
the float model on the test split before it is published (``export.quantize: int8``).

Keras 3's ``model.quantize("int8")`` stores the kernels of ``Dense`` and ``EinsumDense``
layers and the table of ``Embedding`` layers as int8 with a float scale per output (per
row for an embedding), and quantizes a Dense layer's inputs on the fly; other layers
(``LSTM``, ``Conv2D``, normalisation...) stay float. The run's ``model.keras`` stays float:
only the served copy is quantized, so a run can be exported both ways (``tfkit export
RUN --quantize int8``).
"""

from __future__ import annotations

import logging
import warnings

import keras
import numpy as np

from tfkit.config import QUANTIZE_MODES, ConfigError
from tfkit.monitor import predictions, traced_call

log = logging.getLogger("tfkit")


def quantizable_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of ``model`` (nested ones included) whose class implements Keras's
    ``quantize`` (``Dense``, ``EinsumDense``, ``Embedding`` and their subclasses)."""
    return [layer for layer in model._flatten_layers(include_self=False)
            if not list(layer._flatten_layers(include_self=False))
            and type(layer).quantize is not keras.layers.Layer.quantize]


def check_quantizable(model: keras.Model, mode: str, model_name: str) -> None:
    """Refuses ``export.quantize: <mode>`` for a model with nothing Keras can quantize.

    Raises:
        ConfigError: for an unknown mode, or a model without ``Dense``, ``EinsumDense`` or
            ``Embedding`` layers.
    """
    if mode not in QUANTIZE_MODES:
        raise ConfigError(f"export.quantize must be one of {', '.join(QUANTIZE_MODES)}; "
                          f"got {mode!r}.")
    if mode != "none" and not quantizable_layers(model):
        kinds = sorted({type(layer).__name__ for layer in model._flatten_layers(
            include_self=False) if layer.weights})
        raise ConfigError(f"export.quantize: {mode}: model '{model_name}' has no layer Keras "
                          "can quantize (Dense, EinsumDense, Embedding); its layers with "
                          f"weights are {', '.join(kinds) or 'none'}. Use export.quantize: none.")


def quantized_copy(model: keras.Model, mode: str) -> tuple[keras.Model, list[str]]:
    """A copy of ``model`` with its weights, quantized by Keras (``model`` is left as it is).

    Returns:
        ``(copy, names of the quantized layers)``.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    with warnings.catch_warnings():  # Keras warns for every layer it leaves float
        warnings.filterwarnings("ignore", "Layer .* does not have a `quantize` method")
        warnings.filterwarnings("ignore", "__array__ implementation doesn't accept a copy")
        copy.quantize(mode)
    names = [layer.name for layer in copy._flatten_layers(include_self=False)
             if getattr(layer, "quantization_mode", None) == mode]
    return copy, names


def _head_scores(labels, float_probabilities, probabilities) -> dict:
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    rows = np.arange(len(labels))
    chosen = np.clip(probabilities[rows, labels], 1e-7, 1.0)
    return {"accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)),
            "float_accuracy": float(np.mean(float_probabilities.argmax(axis=1) == labels)),
            "loss": float(-np.log(chosen).mean()),
            "label_agreement": float(np.mean(
                probabilities.argmax(axis=1) == float_probabilities.argmax(axis=1))),
            "max_probability_change": float(np.abs(probabilities - float_probabilities).max())}


def quantize_for_serving(model: keras.Model, mode: str, test_ds, predicted) -> tuple[
        keras.Model, dict]:
    """The model to serve with ``export.quantize: <mode>`` and what quantizing changed.

    Args:
        model: the trained float model.
        mode: ``"int8"``.
        test_ds: the test split's ``(x, y)`` batches.
        predicted: the float model's test ``(label ids, probabilities)``
            (:func:`tfkit.evaluation.score_test_split`; ``{head: ...}`` for multi-task).

    Returns:
        ``(quantized copy, facts)``; facts: ``mode``, ``layers`` (quantized),
        ``float_layers`` (left float, with weights), and per classification head (keys
        prefixed ``<head>_`` for multi-task models) the test ``accuracy``, ``float_accuracy``,
        ``accuracy_change``, ``loss``, ``label_agreement`` (share of test examples whose
        answer is the float model's) and ``max_probability_change``.
    """
    quantized, names = quantized_copy(model, mode)
    _, probabilities = predictions(traced_call(quantized), test_ds)
    facts = {"mode": mode, "layers": names, "float_layers": [
        layer.name for layer in quantized._flatten_layers(include_self=False)
        if layer.weights and not list(layer._flatten_layers(include_self=False))
        and layer.name not in names]}
    heads = predicted if isinstance(predicted, dict) else {None: predicted}
    if not isinstance(probabilities, dict):
        probabilities = {None: probabilities}
    for head, (labels, float_probabilities) in heads.items():
        scores = _head_scores(labels, float_probabilities, probabilities[head])
        scores["accuracy_change"] = scores["accuracy"] - scores["float_accuracy"]
        prefix = f"{head}_" if head else ""
        facts.update({f"{prefix}{key}": round(value, 6) for key, value in scores.items()})
    log.info("quantized (%s) %d layer(s) for serving: test accuracy %s, answers as the float "
             "model's on %s of the test split", mode, len(names), ", ".join(
                 f"{facts[f'{p}accuracy']:.4f} ({facts[f'{p}accuracy_change']:+.4f})"
                 for p in (f"{h}_" if h else "" for h in heads)), ", ".join(
                 f"{facts[f'{p}label_agreement']:.1%}" for p in (f"{h}_" if h else ""
                                                                 for h in heads)))
    return quantized, facts


def served_metrics(metrics: dict, facts: dict) -> dict:
    """``metrics`` with the quantized model's test accuracy and loss in place of the float
    model's (what the checks before serving judge: the model clients will get)."""
    served = dict(metrics)
    for key in facts:
        if key.endswith("float_accuracy"):
            prefix = key[: -len("float_accuracy")]
            served[f"test_{prefix}accuracy"] = facts[f"{prefix}accuracy"]
            served[f"test_{prefix}loss"] = facts[f"{prefix}loss"]
    return served


def quantization_reasons(facts: dict, max_regression: float) -> list[str]:
    """Why a quantized model may not replace its float model: a test accuracy more than
    ``max_regression`` (``export.max_regression``) below the float model's."""
    reasons = []
    for key, value in facts.items():
        if key.endswith("accuracy_change") and value < -max_regression:
            prefix = key[: -len("accuracy_change")]
            reasons.append(f"quantized ({facts['mode']}) test {prefix}accuracy "
                           f"{facts[f'{prefix}accuracy']:.4f} is {-value:.4f} below the float "
                           f"model's {facts[f'{prefix}float_accuracy']:.4f} "
                           f"(export.max_regression: {max_regression}; export.quantize: none "
                           "serves the float model)")
    return reasons
