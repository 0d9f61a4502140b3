"""tfkit: Keras 3 / TensorFlow classifiers from raw data to TensorBoard and TF Serving.

Ten lines::

    import tfkit
    result = tfkit.train("fine_foods_fasttext", ["train.epochs=3"])
    print(result.metrics["test_accuracy"], result.export_path)
    print(tfkit.predict(result.export_path, ["Delicious, will buy again"]))

The names below are imported from their modules on first use (PEP 562), so ``import tfkit``
and ``tfkit --help`` do not wait for TensorFlow (~5 s); ``tfkit.train`` imports it.
"""

from tfkit.lazy import lazy_getattr

__version__ = "0.1.0"

# the public API: module -> the names it gives
_PUBLIC = {
    "tfkit.config": ["Config", "ConfigError", "DataConfig", "ExportConfig", "ModelConfig",
                     "TrainConfig", "TuneConfig", "config_from_dict", "load_config", "save_config"],
    "tfkit.data": ["DataError", "HierarchicalTextPreprocessor", "ImagePreprocessor",
                   "LabeledData", "SequencePreprocessor", "TextPreprocessor", "TfidfPreprocessor",
                   "array_dataset",
                   "load_data", "load_preprocessor", "load_word_vectors", "save_word_vectors",
                   "token_dataset"],
    "tfkit.distribute": ["choose_strategy", "resolve_strategy"],
    "tfkit.explain": ["attention_html", "attention_weights", "explain_predictions",
                      "importance_html", "word_importance"],
    "tfkit.export": ["export_for_serving"],
    "tfkit.served": ["ServedModel", "load_serving", "predict"],
    "tfkit.models": ["MODELS", "build_model", "model_params"],
    "tfkit.monitor": ["log_embeddings", "log_misclassified"],
    "tfkit.optimizers": ["LazyAdam"],
    "tfkit.sweeps": ["SweepResult", "sweep"],
    "tfkit.tuning": ["TuneResult", "tune"],
    "tfkit.training": ["RunResult", "train"],
    "tfkit.evaluation": ["evaluate"],
    "tfkit.publishing": ["export_run"],
    "tfkit.runs": ["load_run"],
    "tfkit.convert": ["convert"],
}
_MODULE_OF = {name: module for module, names in _PUBLIC.items() for name in names}

__all__ = list(_MODULE_OF)


__getattr__ = lazy_getattr("tfkit", _MODULE_OF, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
