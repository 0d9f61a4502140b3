"""SavedModels for TF Serving: raw input in, probabilities and labels out, published atomically.

Layout (what TF Serving's file-system poller expects)::

    saved_models/<name>/1/saved_model.pb, variables/, assets/,
                          assets.extra/tf_serving_warmup_requests, assets.extra/tfkit.json
    saved_models/<name>/2/...
    saved_models/models.config   TF Serving's model config file: every model in the folder

A version is written with Keras 3's ``ExportArchive`` into a hidden temporary folder
beside the versions (TF Serving ignores names that are not integers), loaded back
with ``tf.saved_model.load``, checked against the Keras model on sample inputs (and its
warmup requests replayed, as TF Serving does when it loads it), and only then renamed to the
next integer version. A failed export leaves no version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)

from tfkit.errors import short_reason
from tfkit.owners import owner_alive, write_owner
from tfkit.serving_config import MODEL_CONFIG, published_versions, write_model_config

SERVING_KEY = "serving_default"
EXAMPLES_KEY = "serving_examples"  # the same raw input inside serialized tf.train.Example protos
WARMUP_FILE = "tf_serving_warmup_requests"  # TF Serving replays it from assets.extra/ on load
# TF Serving's Classify and Regress APIs: signatures with these method names, serialized
# tf.train.Example protos in ("inputs"), "classes" and "scores" / "outputs" out
CLASSIFY_KEY, REGRESS_KEY = "classification", "regression"
API_METHODS = {CLASSIFY_KEY: "tensorflow/serving/classify", REGRESS_KEY: "tensorflow/serving/regress"}
STAGING_PREFIX = ".export-"  # hidden: TF Serving serves only folders named by an integer
STALE_AFTER_SECONDS = 6 * 3600  # a staging folder without a live owner older than this is stale
# the warmup file: TF Serving replays it at every load, so it is kept small
WARMUP_TEXT_CHARS = 4000  # each text cut to this many characters
WARMUP_EXAMPLE_BYTES = 256 * 1024  # a larger encoded image is not used for warmup
WARMUP_MAX_BYTES = 1024 * 1024  # the whole file

log = logging.getLogger("tfkit")


class ExportError(RuntimeError):
    """The exported SavedModel did not reproduce the Keras model; nothing was published."""


def next_version(model_dir: str | os.PathLike) -> int:
    """The next integer version under ``model_dir`` (1 when there is none)."""
    path = Path(model_dir)
    versions = [int(p.name) for p in path.iterdir() if p.name.isdigit()] if path.is_dir() else []
    return max(versions, default=0) + 1


def _class_outputs(probabilities, label_names, prefix=""):
    class_id = tf.argmax(probabilities, axis=-1)
    labels = tf.gather(tf.constant(label_names, tf.string), class_id)
    return {f"{prefix}probabilities": tf.cast(probabilities, tf.float32),
            f"{prefix}class_id": class_id, f"{prefix}label": labels}


def _label_set_outputs(probabilities, label_names, multi_label: dict):
    """A multi-label model's outputs: ``probabilities`` (``float32 [None, labels]``, one
    sigmoid per label), ``predicted`` (``int32 [None, labels]``: 1 where the probability
    reaches the label's threshold) and ``labels`` (``string [None]``: those labels joined by
    the data's separator, ``""`` for none)."""
    probabilities = tf.cast(probabilities, tf.float32)
    answered = probabilities >= tf.constant(multi_label["thresholds"], tf.float32)
    names = tf.broadcast_to(tf.constant(label_names, tf.string), tf.shape(probabilities))
    labels = tf.strings.reduce_join(tf.ragged.boolean_mask(names, answered), axis=1,
                                    separator=multi_label["separator"])
    return {"probabilities": probabilities, "predicted": tf.cast(answered, tf.int32),
            "labels": labels}


def _outputs(predictions, label_names, multi_label: dict | None = None):
    """The serving outputs: ``probabilities``, ``class_id``, ``label``; for a multi-task
    model (``label_names`` a dict) the same prefixed with ``<head>_`` per classification
    head and ``<head>`` (``float32 [None]``) per regression head; for a multi-label model
    (``multi_label``: ``{"thresholds": [...], "separator": "|"}``) those of
    :func:`_label_set_outputs`."""
    if multi_label:
        return _label_set_outputs(predictions, label_names, multi_label)
    if not isinstance(label_names, dict):
        return _class_outputs(predictions, label_names)
    out = {}
    for head, names in label_names.items():
        if names:
            out.update(_class_outputs(predictions[head], names, prefix=f"{head}_"))
        else:
            out[head] = tf.cast(tf.reshape(predictions[head], [-1]), tf.float32)
    return out


def plain_names(label_names):
    """Label names as JSON and ``tf.constant`` take them: a list, or ``{head: names}``."""
    return dict(label_names) if isinstance(label_names, dict) else list(label_names)


def _serving_fn(call, prepare, names, multi_label=None):
    """An endpoint's function: raw inputs -> ``prepare`` -> ``call`` (the model in inference
    mode, :func:`shared_model_function`) -> the serving outputs."""
    def serve(inputs):
        return _outputs(call(prepare(inputs)), names, multi_label)

    return serve


def _examples_endpoint(prepare, spec):
    """``serving_examples``: serialized ``tf.train.Example`` protos in (``examples``,
    ``tf.string [None]``), each holding the raw input in one feature named like
    ``serving_default``'s input (``text`` or ``image_bytes``: a bytes feature; ``sequence``:
    a float feature of ``steps x features`` values, row-major), or for a signature of several
    inputs (``spec`` a dict: text and table columns) one feature per input (float, int64 or
    bytes); a missing feature is an error that names it, never an empty input."""
    specs = spec if isinstance(spec, dict) else {spec.name: spec}
    features = {}
    for name, one in specs.items():
        shape = one.shape[1:]
        features[name] = (tf.io.FixedLenFeature([], tf.string) if one.dtype == tf.string
                          else tf.io.FixedLenFeature([], one.dtype) if shape.rank == 0
                          else tf.io.FixedLenFeature([shape.num_elements()], one.dtype))

    def parse(examples):
        values = tf.io.parse_example(examples, features)
        values = {name: tf.reshape(values[name], [-1, *one.shape[1:]]) if one.shape[1:].rank
                  else values[name] for name, one in specs.items()}
        return prepare(values if isinstance(spec, dict) else values[spec.name])

    return parse, [tf.TensorSpec([None], tf.string, name="examples")]


def serving_endpoints(preprocessor) -> dict:
    """``{signature: (fn, input_signature)}``: the preprocessor's own endpoints
    (``serving_default`` on raw input, ``serving_tensor`` for images) and ``serving_examples``."""
    endpoints = preprocessor.serving_endpoints()
    return {**endpoints, EXAMPLES_KEY: _examples_endpoint(endpoints[SERVING_KEY][0],
                                                          endpoints[SERVING_KEY][1][0])}


def make_examples(inputs, feature: str | None = None) -> list[bytes]:
    """Serialized ``tf.train.Example`` protos for the ``serving_examples`` signature, one per
    raw input: texts or encoded image bytes as a bytes feature, arrays (sequences) as a float
    feature.

    Examples:
        >>> example = tf.train.Example.FromString(make_examples(["Delicious"], "text")[0])
        >>> example.features.feature["text"].bytes_list.value
        [b'Delicious']

        Feed them to a loaded export as
        ``loaded.signatures["serving_examples"](examples=tf.constant(make_examples(...)))``.
        For a model with several inputs (text and table columns), ``inputs`` is
        ``{input: values}`` and each Example holds one feature per input (integers as an
        int64 feature):

        >>> example = tf.train.Example.FromString(
        ...     make_examples({"text": ["Tasty"], "price": [3.5], "year": [1999]})[0])
        >>> example.features.feature["year"].int64_list.value
        [1999]
    """
    def one(value):
        if isinstance(value, str):
            value = value.encode("utf-8")
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        if isinstance(value, (int, np.integer)):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        return tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(value)))

    columns = inputs if isinstance(inputs, dict) else {feature: inputs}
    rows = len(next(iter(columns.values())))
    return [tf.train.Example(features=tf.train.Features(feature={
        name: one(values[row]) for name, values in columns.items()})).SerializeToString()
        for row in range(rows)]


def serving_function(model: keras.Model, preprocessor, label_names: list[str] | dict,
                     multi_label: dict | None = None):
    """``serving_default`` traced as the export traces it (raw input, preprocessing, model,
    outputs; ``tf.function`` without autograph, as ``ExportArchive.add_endpoint``): a concrete
    function, e.g. for its graph in TensorBoard (:func:`tfkit.monitor.log_graph`)."""
    prepare, signature = preprocessor.serving_endpoints()[SERVING_KEY]
    names = plain_names(label_names)
    return tf.function(_serving_fn(lambda inputs: model(inputs, training=False), prepare, names,
                                   multi_label), input_signature=signature,
                       autograph=False).get_concrete_function()


def shared_model_function(model: keras.Model, endpoints: dict):
    """The Keras model as one ``tf.function`` that every endpoint calls, traced once for
    what all the endpoints' preprocessing gives it (their common ``TensorSpec``), so the
    SavedModel holds the model's graph once, not once per signature (a tiny text run's
    export ~0.3 s faster, a HAN's 10.5 -> 9.8 s).

    Raises:
        ExportError: the endpoints give the model inputs of different types (a
            preprocessor whose ``serving_endpoints`` disagree with each other).
    """
    specs = {}
    for endpoint, (prepare, signature) in endpoints.items():
        traced = tf.function(prepare, autograph=False).get_concrete_function(*signature)
        specs[endpoint] = tf.nest.map_structure(tf.type_spec_from_value,
                                                traced.structured_outputs)
    first, *others = specs.values()
    try:
        common = tf.nest.map_structure(lambda one, *rest: one.most_specific_common_supertype(rest),
                                       first, *others)
    except (TypeError, ValueError):
        common = None
    if common is None or any(spec is None for spec in tf.nest.flatten(common)):
        raise ExportError(f"the serving endpoints give the model inputs of different types: "
                          f"{specs}")
    return tf.function(lambda inputs: model(inputs, training=False), input_signature=[common],
                       autograph=False)


def build_archive(model: keras.Model, preprocessor, label_names: list[str] | dict,
                  multi_label: dict | None = None):
    """An ``ExportArchive`` with one endpoint per serving input (:func:`serving_endpoints`).

    Text models: ``serving_default`` takes ``text`` (``tf.string [None]``). Image models:
    ``serving_default`` takes ``image_bytes`` (encoded PNG/JPEG, ``tf.string [None]``) and
    ``serving_tensor`` takes ``images`` (``float32 [None, h, w, c]``, values 0..255). All:
    ``serving_examples`` takes ``examples``, serialized ``tf.train.Example`` protos holding
    ``serving_default``'s input as a feature of the same name.
    Every endpoint returns ``probabilities`` (``float32 [None, classes]``), ``class_id``
    (``int64 [None]``) and ``label`` (``string [None]``). The label names are also kept
    as the variable collection ``label_names`` (``loaded.label_names[0]``). Multi-task
    models return those per classification head, prefixed ``<head>_``, and ``<head>``
    per regression head; their label names are in ``assets.extra/tfkit.json``.
    Multi-label models (``multi_label``) return ``probabilities``, ``predicted`` and
    ``labels`` (:func:`_label_set_outputs`).
    """
    archive = keras.export.ExportArchive()
    # The model is not passed to archive.track(): add_endpoint() already tracks every variable
    # the endpoint uses, and track(model) would add the keras.Variable wrappers of the same
    # weights, which the checkpoint writes a second time (keras-team/keras#23553: 2x the
    # SavedModel's size and 2x the variable memory in TF Serving).
    for layer in getattr(preprocessor, "layers", None) or (
            [preprocessor.layer] if hasattr(preprocessor, "layer") else []):
        archive.track(layer)  # lookup tables: the vocabulary, a FeatureSpace's categories
    names = plain_names(label_names)
    endpoints = serving_endpoints(preprocessor)
    shared = shared_model_function(model, endpoints)
    for endpoint, (prepare, signature) in endpoints.items():
        archive.add_endpoint(endpoint, _serving_fn(shared, prepare, names, multi_label),
                             input_signature=signature)
    parse = endpoints[EXAMPLES_KEY][0]
    for endpoint, (head, head_names) in api_endpoints(names).items():
        archive.add_endpoint(endpoint, _api_fn(shared, parse, head, head_names),
                             input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    if isinstance(names, list):
        archive.add_variable_collection(
            "label_names", [tf.Variable(names, trainable=False, name="label_names")])
    return archive


def api_endpoints(label_names) -> dict:
    """``{signature: (head, label names)}`` for TF Serving's Classify and Regress APIs:
    ``classification`` for a single-task classifier; for a multi-task model
    ``classification_<head>`` per classification head and ``regression_<head>`` per
    regression head (``head`` None and the label names for a single-task model; ``[]`` names
    for regression)."""
    if not isinstance(label_names, dict):
        return {CLASSIFY_KEY: (None, list(label_names))}
    return {f"{CLASSIFY_KEY if names else REGRESS_KEY}_{head}": (head, list(names))
            for head, names in label_names.items()}


def api_method(endpoint: str) -> str:
    """The SignatureDef method name of a Classify or Regress endpoint."""
    return API_METHODS[CLASSIFY_KEY if endpoint.startswith(CLASSIFY_KEY) else REGRESS_KEY]


def _api_fn(call, parse, head, names):
    """Serialized Examples -> ``{"classes": label names [batch, classes], "scores":
    probabilities}`` (Classify), or ``{"outputs": values [batch]}`` (Regress)."""
    def serve(inputs):
        predictions = call(parse(inputs))
        values = tf.cast(predictions[head] if head else predictions, tf.float32)
        if not names:
            return {"outputs": tf.reshape(values, [-1])}
        classes = tf.tile(tf.constant([names], tf.string), [tf.shape(values)[0], 1])
        return {"classes": classes, "scores": values}

    return serve


def _api_expected(endpoint: str, expected: dict, label_names) -> dict:
    """What a Classify / Regress endpoint must answer, from :func:`_outputs`' ``expected``."""
    head, names = api_endpoints(plain_names(label_names))[endpoint]
    if not names:
        return {"outputs": expected[head]}
    return {"scores": expected[f"{head}_probabilities" if head else "probabilities"],
            "classes": None}


def set_api_method_names(path: Path, endpoints) -> None:
    """Gives the Classify / Regress ``endpoints`` of the SavedModel at ``path`` their TF
    Serving method names (``tf.saved_model.save`` writes every signature as Predict; this is
    TensorFlow's own fix-up, ``MethodNameUpdater``)."""
    updater = tf.compat.v1.saved_model.signature_def_utils.MethodNameUpdater(str(path))
    for endpoint in endpoints:
        updater.replace_method_name(endpoint, api_method(endpoint), tags="serve")
    updater.save()


def endpoint_inputs(preprocessor, samples, label_names=()) -> tuple[dict, tf.Tensor]:
    """The samples as each endpoint takes them, ``{endpoint: {input name: batch}}`` (the
    raw samples for ``serving_default``, the same in ``tf.train.Example`` protos for
    ``serving_examples`` and, given the model's ``label_names``, the Classify / Regress
    endpoints (:func:`api_endpoints`); for ``serving_tensor`` the tensor the preprocessor
    makes of them), and that tensor (what the Keras model takes). ``samples``: raw inputs,
    or ``{input: values}`` for a signature of several inputs."""
    endpoints = serving_endpoints(preprocessor)
    spec = endpoints[SERVING_KEY][1][0]
    if isinstance(spec, dict):
        raw = {name: tf.constant(samples[name], one.dtype) for name, one in spec.items()}
    else:
        raw = {spec.name: tf.constant(samples)}
    prepared = endpoints[SERVING_KEY][0](raw if isinstance(spec, dict) else raw[spec.name])
    examples = tf.constant(make_examples({name: value.numpy() for name, value in raw.items()}))
    batches = {SERVING_KEY: raw, EXAMPLES_KEY: {"examples": examples}}
    inputs = {endpoint: batches[endpoint] if endpoint in batches else
              {signature[0].name: prepared} for endpoint, (_, signature) in endpoints.items()}
    if len(label_names):
        inputs.update({endpoint: {"inputs": examples}
                       for endpoint in api_endpoints(plain_names(label_names))})
    return inputs, prepared


def warmup_samples(samples) -> list:
    """The export's check samples as the warmup file holds them: texts cut to
    ``WARMUP_TEXT_CHARS`` characters, encoded images over ``WARMUP_EXAMPLE_BYTES`` left out
    (TF Serving replays the file at every load of the version: a 5 MB review would be
    replayed as 5 MB, twice per endpoint). Several inputs (``{input: values}``): the texts
    cut, every row kept."""
    if isinstance(samples, dict):
        return {name: [v[:WARMUP_TEXT_CHARS] if isinstance(v, str) else v for v in values]
                for name, values in samples.items()}
    kept = [sample[:WARMUP_TEXT_CHARS] if isinstance(sample, str) else sample
            for sample in samples
            if not isinstance(sample, bytes) or len(sample) <= WARMUP_EXAMPLE_BYTES]
    if not kept and len(samples):  # every image is large: warm up with the smallest one
        kept = [min(samples, key=len)]
    return kept


def _warmup_record(model_name: str, endpoint: str, feeds: dict) -> bytes:
    """One ``PredictionLog``: a Classify or Regress request for those endpoints (the
    serialized Examples as its ``input.example_list``), a Predict request otherwise."""
    spec = model_pb2.ModelSpec(name=model_name, signature_name=endpoint)
    if endpoint.startswith((CLASSIFY_KEY, REGRESS_KEY)):
        examples = input_pb2.Input(example_list=input_pb2.ExampleList(
            examples=[tf.train.Example.FromString(row)
                      for row in next(iter(feeds.values())).numpy()]))  # "inputs"
        if endpoint.startswith(CLASSIFY_KEY):
            log = prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(
                request=classification_pb2.ClassificationRequest(model_spec=spec, input=examples)))
        else:
            log = prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(
                request=regression_pb2.RegressionRequest(model_spec=spec, input=examples)))
        return log.SerializeToString()
    request = predict_pb2.PredictRequest(model_spec=spec)
    for name, rows in feeds.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(rows.numpy()))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString()


def write_warmup_requests(path: Path, model_name: str, inputs: dict,
                          max_bytes: int = WARMUP_MAX_BYTES) -> None:
    """Writes TF Serving's SavedModel warmup file, ``assets.extra/tf_serving_warmup_requests``.

    TF Serving initialises parts of the TensorFlow runtime lazily, so the first request to a
    fresh version pays for them; with this file it replays the requests when it loads the
    version, before the version serves. A TFRecord of ``PredictionLog`` protos (the
    ``tensorflow-serving-api`` messages): per endpoint, one request with the first sample
    and one with as many of the samples (:func:`warmup_samples`) as keep the file under
    ``max_bytes``; a request that does not fit at all is left out.
    """
    total = 0
    with tf.io.TFRecordWriter(str(path / "assets.extra" / WARMUP_FILE)) as writer:
        for endpoint, feeds in inputs.items():
            for rows in (1, int(next(iter(feeds.values())).shape[0])):
                record = _warmup_record(model_name, endpoint,
                                        {k: v[:rows] for k, v in feeds.items()})
                while total + len(record) > max_bytes and rows > 1:
                    rows //= 2  # fewer rows, until the request fits
                    record = _warmup_record(model_name, endpoint,
                                            {k: v[:rows] for k, v in feeds.items()})
                if total + len(record) > max_bytes:
                    continue
                writer.write(record)
                total += len(record)


def replay_warmup_requests(path: Path, loaded) -> None:
    """Runs every warmup request of the SavedModel at ``path`` through ``loaded``'s
    signatures, as TF Serving does when it loads the version (a failing request makes TF
    Serving refuse the version)."""
    records = tf.data.TFRecordDataset(str(path / "assets.extra" / WARMUP_FILE))
    for number, record in enumerate(records, 1):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        kind = log.WhichOneof("log_type")
        request = getattr(log, kind).request
        signature = request.model_spec.signature_name
        if kind == "predict_log":
            inputs = {name: tf.constant(tf.make_ndarray(proto))
                      for name, proto in request.inputs.items()}
        else:  # classify_log / regress_log: the Examples, serialized again
            inputs = {"inputs": tf.constant([example.SerializeToString()
                                             for example in request.input.example_list.examples])}
        try:
            loaded.signatures[signature](**inputs)
        except (KeyError, TypeError, ValueError, tf.errors.OpError) as exc:
            raise ExportError(f"warmup request {number} ({signature}, inputs "
                              f"{sorted(inputs)}) fails on the exported model at "
                              f"'{path}': {exc}") from exc


def _check_export(path: Path, model, label_names, inputs: dict, model_inputs,
                  atol: float, multi_label: dict | None = None) -> None:
    """Loads the SavedModel back, compares every endpoint's float outputs (probabilities,
    regression values) on ``inputs`` with the Keras model's on ``model_inputs``
    (:func:`endpoint_inputs`), and replays the warmup requests."""
    loaded = tf.saved_model.load(str(path))
    outputs = _outputs(model(model_inputs, training=False), label_names, multi_label)
    apis = api_endpoints(plain_names(label_names))
    for endpoint, feeds in inputs.items():
        served = loaded.signatures[endpoint](**feeds)
        expected = _api_expected(endpoint, outputs, label_names) if endpoint in apis else outputs
        if set(served) != set(expected):
            raise ExportError(f"exported model at '{path}' ({endpoint}) returns {sorted(served)}, "
                              f"expected {sorted(expected)}")
        for key, want in expected.items():
            if want is None or want.dtype != tf.float32:
                continue
            got, want = served[key].numpy(), want.numpy()
            if got.shape != want.shape:
                raise ExportError(f"exported model at '{path}' ({endpoint}) returns {key} of "
                                  f"shape {got.shape}, the Keras model {want.shape}")
            diff = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)))) \
                if got.size else 0.0
            if diff > atol:
                raise ExportError(f"exported model at '{path}' ({endpoint}) differs from the "
                                  f"Keras model in {key}: max relative |diff| = {diff:.3g} "
                                  f"> atol = {atol}")
    replay_warmup_requests(path, loaded)


def check_next_version(model_dir: str | os.PathLike, label_names, preprocessor,
                       multi_label: dict | None = None) -> None:
    """Refuses a new version that would change what the model's TF Serving clients get.

    TF Serving switches every client of ``<name>`` to its newest version, so a version with
    other label names (a model trained on other data under a preset's name, say) or another
    input would silently change their answers; so would a multi-label model (truthy
    ``multi_label``) after one with one label per example, or the reverse. Versions that
    ``tfkit.json`` does not describe (not exported by tfkit) are not compared.

    Raises:
        ExportError: naming the latest version, its labels and input, and this model's.
    """
    model_dir = Path(model_dir)
    versions = published_versions(model_dir)
    if not versions:
        return
    latest = versions[-1]
    facts = export_facts(latest)
    if facts is None:
        return
    theirs = {"labels": facts.get("label_names"),
              "input": facts.get("serving_input", preprocessor.serving_input),
              "several labels per example": bool(facts.get("multi_label"))}
    mine = {"labels": plain_names(label_names), "input": preprocessor.serving_input,
            "several labels per example": bool(multi_label)}
    if theirs != mine:
        raise ExportError(
            f"'{latest}' serves labels {theirs['labels']} (input '{theirs['input']}'"
            f"{', several per example' if theirs['several labels per example'] else ''}) to the "
            f"TF Serving clients of '{model_dir.name}'; this model has labels {mine['labels']} "
            f"(input '{mine['input']}'{', several per example' if multi_label else ''}), and as "
            f"version {int(latest.name) + 1} it would replace that model "
            "for them. Export it under another name (config 'name' or 'export.name'; "
            "tfkit export --name), or move the old versions out of that folder first.")


def export_for_serving(model: keras.Model, preprocessor, label_names: list[str],
                       model_dir: str | os.PathLike, samples, *, atol: float = 1e-5,
                       metadata: dict | None = None, serving_root: str = "/models",
                       multi_label: dict | None = None) -> Path:
    """Exports ``preprocessor ∘ model`` as the next version under ``model_dir``.

    Args:
        model: the trained Keras model (token ids in, probabilities out).
        preprocessor: the adapted preprocessor the model was trained with.
        label_names: label string for each class id.
        model_dir: ``saved_models/<name>``; versions are created inside it.
        samples: raw inputs used to check the export (include edge cases: "" and long text)
            and written as its TF Serving warmup requests (``assets.extra/``).
        atol: largest allowed difference between served and Keras probabilities.
        metadata: extra facts written to ``assets.extra/tfkit.json`` (run dir, metrics).
        serving_root: where TF Serving sees ``model_dir``'s parent, for the base paths in
            its ``models.config`` (:func:`write_model_config`), rewritten after each export.
        multi_label: for a multi-label model (sigmoid outputs), ``{"thresholds": one per
            label, "separator": "|"}``: what the served ``predicted`` and ``labels`` use
            (kept in ``assets.extra/tfkit.json`` as ``multi_label``).

    Returns:
        The published version directory, e.g. ``saved_models/fine_foods/1``.

    Raises:
        ExportError: if the latest version has other labels or another input
            (:func:`check_next_version`), the reloaded SavedModel does not match or a warmup
            request fails; nothing is published.

    Examples:
        >>> pre = tfkit.TextPreprocessor(max_tokens=100, max_len=8)
        >>> pre.adapt(["tasty and fresh", "stale, do not buy"])
        >>> model = tfkit.build_model("text_fasttext", vocab_size=pre.vocab_size,
        ...                           num_classes=2, buckets=64)
        >>> path = export_for_serving(model, pre, ["great", "other"], "saved_models/demo",
        ...                           samples=["tasty", ""])
        >>> path.parts[-2:]
        ('demo', '1')
        >>> sorted(tf.saved_model.load(str(path)).signatures)
        ['classification', 'serving_default', 'serving_examples']
    """
    model_dir = Path(model_dir).resolve()
    check_next_version(model_dir, label_names, preprocessor, multi_label)
    if multi_label:
        multi_label = {"thresholds": [float(t) for t in multi_label["thresholds"]],
                       "separator": str(multi_label["separator"])}
        if len(multi_label["thresholds"]) != len(label_names):
            raise ValueError(f"multi_label: {len(multi_label['thresholds'])} thresholds for "
                             f"{len(label_names)} labels.")
    created = not model_dir.exists()  # removed again if this export publishes nothing
    published = False
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(model_dir)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=model_dir))
        write_owner(staging)  # which process writes it
    except OSError as exc:
        raise ExportError(f"cannot write a SavedModel into '{model_dir}': {short_reason(exc)}; "
                          "nothing was published.") from None
    try:
        _write_checked(staging / "model", model, preprocessor, label_names, samples,
                       model_dir.name, atol, metadata, multi_label)
        target = _rename_to_next_version(staging / "model", model_dir)
        published = True
    except (OSError, tf.errors.OpError) as exc:  # a full disk, a folder made read-only...
        raise ExportError(f"exporting the SavedModel into '{model_dir}' failed: {short_reason(exc)}; "
                          "nothing was published.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not published:
            with contextlib.suppress(OSError):  # left as it is if anything else is in it
                model_dir.rmdir()
    try:
        write_model_config(model_dir.parent, serving_root)
    except (OSError, ValueError) as exc:  # a full disk; a version_labels.json spoilt by hand
        raise ExportError(f"version {target.name} is published and live at '{target}' (TF "
                          "Serving's file-system poller serves it), but writing "
                          f"'{model_dir.parent / MODEL_CONFIG}' failed: {short_reason(exc)}. Fix "
                          "that, then run any export again to rewrite it.") from None
    return target


def _write_checked(path: Path, model: keras.Model, preprocessor, label_names, samples,
                   model_name: str, atol: float, metadata: dict | None,
                   multi_label: dict | None) -> None:
    """Writes the SavedModel at ``path`` (the archive, ``assets.extra/tfkit.json``, the API
    method names, the warmup requests), then loads it back and checks its answers
    (:func:`_check_export`)."""
    archive = build_archive(model, preprocessor, label_names, multi_label)
    archive.write_out(str(path), verbose=False)
    extra = path / "assets.extra"
    extra.mkdir(exist_ok=True)
    facts = {"label_names": plain_names(label_names),
             "serving_input": preprocessor.serving_input,
             "preprocessor": preprocessor.get_config(),
             "signature": SERVING_KEY, "multi_label": multi_label, **(metadata or {})}
    (extra / "tfkit.json").write_text(json.dumps(facts, indent=2), encoding="utf-8")
    set_api_method_names(path, api_endpoints(plain_names(label_names)))
    inputs, model_inputs = endpoint_inputs(preprocessor, samples, label_names)
    write_warmup_requests(path, model_name, endpoint_inputs(
        preprocessor, warmup_samples(samples), label_names)[0])
    _check_export(path, model, label_names, inputs, model_inputs, atol, multi_label)


def _rename_to_next_version(path: Path, model_dir: Path) -> Path:
    """Renames the checked SavedModel at ``path`` to ``model_dir``'s next version number
    (another exporter may take a number between the check and the rename: then the next)."""
    while True:
        target = model_dir / str(next_version(model_dir))
        try:
            os.rename(path, target)
        except OSError:
            if not target.exists():
                raise
            continue
        return target


def remove_stale_staging(model_dir: Path) -> list[Path]:
    """Removes the hidden staging folders of exports that did not finish (killed, or the
    machine went down): those whose writing process is gone, or, where that cannot be
    told, older than ``STALE_AFTER_SECONDS``. Says so in the log; returns what it removed."""
    removed = []
    for staging in sorted(Path(model_dir).glob(f"{STAGING_PREFIX}*")):
        if not staging.is_dir():
            continue
        alive = owner_alive(staging)
        if alive or (alive is None and
                     time.time() - staging.stat().st_mtime < STALE_AFTER_SECONDS):
            continue
        shutil.rmtree(staging, ignore_errors=True)
        removed.append(staging)
        log.info("removed '%s', left by an export that did not finish", staging)
    return removed


def export_facts(version: Path) -> dict | None:
    """What tfkit wrote about a version in ``assets.extra/tfkit.json`` (labels, input,
    preprocessor settings, run folder), or None for a version tfkit did not export."""
    file = Path(version) / "assets.extra" / "tfkit.json"
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None
