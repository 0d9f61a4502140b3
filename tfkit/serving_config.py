"""TF Serving's model config file, and the version labels it carries.

``<base>/models.config`` (TF Serving's ``--model_config_file``) names every model folder under
the export base that holds a version. A model's version labels (``stable``, ``canary``...)
are kept in ``<base>/<name>/version_labels.json`` (TF Serving ignores files among the version
folders) and written into ``models.config`` as ``version_labels``, with a ``specific``
version policy that serves every labelled version and the newest one. Moving a label is a
canary or a rollback: no version is deleted, and clients that ask for the label are
answered by the version it names.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

MODEL_CONFIG = "models.config"  # --model_config_file: every model under the base folder
BATCHING_FILE = "batching_parameters.txt"  # --enable_batching --batching_parameters_file
# TF Serving's BatchingParameters, from benchmarks/batching.py on the default export (2 CPU
# cores): throughput reaches 90% of its best from 16 examples a call and levels off at 32
# (15,900 examples/s, 2 ms a call), so a batch of 32 that waits at most 1 ms to fill; one
# batch thread per core of this machine (set it to the serving machine's cores); a short
# queue, so that a burst waits in the client rather than for many batches here
BATCHING = {"max_batch_size": 32, "batch_timeout_micros": 1000, "max_enqueued_batches": 8,
            "num_batch_threads": 2}
LABELS_FILE = "version_labels.json"  # in a model folder: {label: version}
# a label is one word: what TF Serving's REST path /v1/models/<name>/labels/<label> can carry
LABEL_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class LabelError(ValueError):
    """A version label that cannot be set; nothing was written."""


def published_versions(model_dir: str | os.PathLike) -> list[Path]:
    """The version folders under ``model_dir`` that hold a SavedModel, oldest first."""
    path = Path(model_dir)
    if not path.is_dir():
        return []
    return sorted((p for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()),
                  key=lambda p: int(p.name))


def version_labels(model_dir: str | os.PathLike) -> dict[str, int]:
    """``{label: version}`` of a model folder (empty when it has none).

    Raises:
        LabelError: for a labels file that is not ``{label: version}`` JSON.
    """
    file = Path(model_dir, LABELS_FILE)
    if not file.is_file():
        return {}
    try:
        labels = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(labels, dict):
            raise ValueError("not an object")
        return {str(label): int(version) for label, version in labels.items()}
    except (ValueError, TypeError) as exc:
        raise LabelError(f"'{file}' is not a {{label: version}} JSON object ({exc}); fix or "
                         "remove it.") from None


def check_label(label: str, where: str = "version label") -> None:
    """A label must be a letter, then letters, digits, ``_`` or ``-``: it becomes part of TF
    Serving's REST path.

    Raises:
        LabelError: naming ``where`` and the label.
    """
    if not LABEL_PATTERN.fullmatch(str(label)):
        raise LabelError(f"{where} {label!r} must be a letter followed by letters, digits, "
                         "'_' or '-' (it becomes part of TF Serving's REST path).")


def set_version_label(model_dir: str | os.PathLike, label: str, version: int | None,
                      serving_root: str | None = None) -> dict[str, int]:
    """Points ``label`` at ``version`` of the model in ``model_dir`` (None removes the label),
    then rewrites ``models.config`` beside the model folder. Returns the model's labels.

    Args:
        model_dir: ``saved_models/<name>``.
        label: one word: a letter, then letters, digits, ``_`` or ``-``.
        version: a published version of that model, or None to remove ``label``.
        serving_root: where TF Serving sees the base folder (default: what ``models.config``
            already says for this model, else ``/models``).

    Raises:
        LabelError: for a label TF Serving could not carry, a version that is not published,
            or removing a label the model does not have; nothing is written then.
    """
    model_dir = Path(model_dir)
    check_label(label)
    labels = version_labels(model_dir)
    if version is None:
        if label not in labels:
            raise LabelError(f"'{model_dir}' has no version label {label!r} (its labels: "
                             f"{labels or 'none'}).")
        labels.pop(label)
    else:
        versions = [int(p.name) for p in published_versions(model_dir)]
        if int(version) not in versions:
            raise LabelError(f"'{model_dir}' has no version {version} to label {label!r}; its "
                             f"versions: {', '.join(map(str, versions)) or 'none'}.")
        labels[label] = int(version)
    root = serving_root or _serving_root(model_dir)
    _write_atomically(model_dir / LABELS_FILE, json.dumps(labels, indent=2, sort_keys=True))
    write_model_config(model_dir.parent, root)
    return labels


def _serving_root(model_dir: Path) -> str:
    """The ``serving_root`` that ``models.config`` already uses for this model."""
    file = model_dir.parent / MODEL_CONFIG
    if file.is_file():
        config = text_format.Parse(file.read_text(encoding="utf-8"),
                                   model_server_config_pb2.ModelServerConfig())
        for entry in config.model_config_list.config:
            if entry.name == model_dir.name and entry.base_path.endswith(f"/{model_dir.name}"):
                return entry.base_path[: -len(model_dir.name) - 1] or "/"
    return "/models"


def write_model_config(base_dir: str | os.PathLike, serving_root: str = "/models") -> Path:
    """Writes ``<base_dir>/models.config``, TF Serving's ``--model_config_file``: a
    ``ModelServerConfig`` text proto naming every model folder under ``base_dir`` that holds a
    version, each with ``base_path`` ``<serving_root>/<name>``, where the server sees it (the
    ``tensorflow/serving`` image's models live under ``/models``). A model with version labels
    gets them, and a ``specific`` version policy serving its labelled versions and its newest
    (labels naming versions that are gone are left out). Written to a temporary file and
    renamed, so a server polling the file never reads half of it."""
    base = Path(base_dir)
    config = model_server_config_pb2.ModelServerConfig()
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = [int(p.name) for p in published_versions(folder)]
        if not versions:
            continue
        entry = config.model_config_list.config.add()
        entry.name, entry.model_platform = folder.name, "tensorflow"
        entry.base_path = f"{serving_root.rstrip('/')}/{folder.name}"
        labels = {k: v for k, v in version_labels(folder).items() if v in versions}
        if labels:
            entry.model_version_policy.specific.versions.extend(
                sorted(set(labels.values()) | {versions[-1]}))
            for label, version in sorted(labels.items()):
                entry.version_labels[label] = version
    _write_atomically(base / MODEL_CONFIG, text_format.MessageToString(config))
    if not (base / BATCHING_FILE).exists():  # never over a file someone has tuned
        write_batching_parameters(base / BATCHING_FILE)
    return base / MODEL_CONFIG


def write_batching_parameters(path: str | os.PathLike, **values: int) -> Path:
    """Writes TF Serving's batching parameters file (a ``BatchingParameters`` text proto, each
    field a wrapper message: ``max_batch_size { value: 32 }``): :data:`BATCHING`, with
    ``values`` changing any of them. Serve with ``--enable_batching
    --batching_parameters_file=<path>``.

    Raises:
        ValueError: for a field :data:`BATCHING` does not have, or a value below 0.
    """
    settings = {**BATCHING}
    for key, value in values.items():
        if key not in BATCHING or not isinstance(value, int) or value < 0:
            raise ValueError(f"batching parameter {key}={value!r}: expected one of "
                             f"{', '.join(BATCHING)}, a whole number >= 0.")
        settings[key] = value
    path = Path(path)
    _write_atomically(path, "".join(f"{key} {{ value: {value} }}\n"
                                    for key, value in settings.items()))
    return path


def _write_atomically(path: Path, text: str) -> None:
    """``path`` written whole or not at all (a temporary file renamed), with the permissions
    the umask gives new files (mkstemp makes them 0600: TF Serving, often another user,
    must read them)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)  # e.g. a full disk: leave no stray file
        raise


def current_umask() -> int:
    """The process's umask (reading it means setting it: set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
