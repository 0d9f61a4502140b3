"""Multi-task models: one shared text encoder (the trunk), one named head per task.

The trunk is any registered text builder (``text_bilstm``, ``text_cnn``, ``han``, ...)
cut below its softmax: its pooled features feed every head. Classification heads end
in a float32 softmax; regression heads in ``Dense(1)`` rescaled by the training
targets' mean and standard deviation, so they predict in the target's own units
(years, prices) while the layer below works at unit scale.
"""

from __future__ import annotations

import keras
from keras import layers


def build_multitask(*, vocab_size: int, heads: dict, encoder: str = "text_bilstm",
                    encoder_params: dict | None = None, head_units: int = 0,
                    name: str = "multitask") -> keras.Model:
    """A shared text encoder with several named heads (classification and regression).

    Args:
        vocab_size: number of token ids, including padding (0) and OOV (1).
        heads: ``{name: spec}`` from the data: ``{"num_classes": n}`` for a
            classification head, ``{"mean": m, "std": s}`` for a regression head.
        encoder: the registered text builder used as the shared trunk.
        encoder_params: keyword arguments for that builder (its own defaults otherwise).
        head_units: an optional ReLU layer of this size in front of each head.
        name: model name.

    Returns:
        A functional ``keras.Model`` whose output is a dict ``{head name: tensor}``:
        probabilities ``[batch, n]`` for classification heads, values ``[batch, 1]`` for
        regression heads.

    Raises:
        ValueError: for no heads, a bad head spec, or an encoder that is not a text model.

    Examples:
        >>> model = build_multitask(vocab_size=50, encoder="text_gru",
        ...                         encoder_params={"units": 4},
        ...                         heads={"topic": {"num_classes": 3},
        ...                                "year": {"mean": 1998.0, "std": 5.5}})
        >>> sorted(model(np.array([[4, 5, 0]])))
        ['topic', 'year']
    """
    from tfkit.data.kinds import TEXT_INPUTS
    from tfkit.models import build_model, get_entry  # the registry imports this

    if not heads:
        raise ValueError("build_multitask needs at least one head. Received: heads={}")
    if get_entry(encoder).inputs not in TEXT_INPUTS:
        raise ValueError(f"encoder must be a registered text model. Received: encoder={encoder!r}")
    trunk = build_model(encoder, vocab_size=vocab_size, num_classes=2, **(encoder_params or {}))
    features = trunk.get_layer("probabilities").input  # pooled features, below the softmax
    outputs = {}
    for head, spec in heads.items():
        x = features
        if head_units:
            x = layers.Dense(head_units, activation="relu", name=f"{head}_hidden")(x)
        if "num_classes" in spec:
            if spec["num_classes"] < 2:
                raise ValueError(f"head {head!r} needs num_classes >= 2. Received: {spec}")
            outputs[head] = layers.Dense(spec["num_classes"], activation="softmax",
                                         dtype="float32", name=head)(x)
        elif "mean" in spec and "std" in spec:
            x = layers.Dense(1, dtype="float32", name=f"{head}_standardized")(x)
            outputs[head] = layers.Rescaling(scale=float(spec["std"]) or 1.0,
                                             offset=float(spec["mean"]), dtype="float32",
                                             name=head)(x)
        else:
            raise ValueError(f"head {head!r} must have num_classes or mean and std. "
                             f"Received: {spec}")
    return keras.Model(trunk.input, outputs, name=name)
