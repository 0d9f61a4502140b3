"""tfkit: Keras 3 / TensorFlow classifiers from raw data to TensorBoard and TF Serving.

Ten lines::

    import tfkit
    result = tfkit.train("fine_foods_fasttext", ["train.epochs=3"])
    print(result.metrics["test_accuracy"], result.export_path)
    print(tfkit.predict(result.export_path, ["Delicious, will buy again"]))
"""

from tfkit.config import (
                          Config,
                          ConfigError,
                          DataConfig,
                          ExportConfig,
                          ModelConfig,
                          TrainConfig,
                          config_from_dict,
                          load_config,
                          save_config,
)
from tfkit.data import (
                          DataError,
                          HierarchicalTextPreprocessor,
                          ImagePreprocessor,
                          LabeledData,
                          SequencePreprocessor,
                          TextPreprocessor,
                          array_dataset,
                          load_data,
                          load_preprocessor,
                          token_dataset,
)
from tfkit.distribute import choose_strategy, resolve_strategy
from tfkit.explain import attention_html, attention_weights
from tfkit.export import export_for_serving, load_serving, predict
from tfkit.models import MODELS, build_model, model_params
from tfkit.monitor import log_embeddings, log_misclassified
from tfkit.optimizers import LazyAdam
from tfkit.train import RunResult, evaluate, export_run, load_run, train

__version__ = "0.1.0"

__all__ = [
    "Config", "ConfigError", "DataConfig", "ExportConfig", "ModelConfig", "TrainConfig",
    "config_from_dict", "load_config", "save_config",
    "DataError", "HierarchicalTextPreprocessor", "ImagePreprocessor", "LabeledData", "SequencePreprocessor", "TextPreprocessor",
    "array_dataset", "load_data", "load_preprocessor", "token_dataset",
    "choose_strategy", "resolve_strategy",
    "attention_html", "attention_weights", "export_for_serving", "load_serving", "predict",
    "log_embeddings", "log_misclassified",
    "MODELS", "build_model", "model_params", "LazyAdam",
    "RunResult", "evaluate", "export_run", "load_run", "train",
]
