import pytest
import yaml

import tfkit
from tfkit.compiling import learning_rate
from tfkit.config import DEFAULT_PRESET, ConfigError, config_from_dict, load_config, save_config


def test_default_preset_is_fasttext_on_fine_foods():
    config = load_config()
    assert config.name == DEFAULT_PRESET == "fine_foods_fasttext"
    assert config.model.name == "text_fasttext" and config.model.params["ngrams"] == 2
    assert config.data.source == "fine_foods"


def test_unknown_key_names_it_and_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"train\.epocs.*Did you mean 'epochs'"):
        config_from_dict({"train": {"epocs": 3}})


def test_unknown_section_is_an_error():
    with pytest.raises(ConfigError, match=r"Unknown config key 'trian'.*'train'"):
        config_from_dict({"trian": {}})


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"train\.epochs must be int, got str 'three'"):
        config_from_dict({"train": {"epochs": "three"}})
    with pytest.raises(ConfigError, match=r"data\.bucket_by_length must be bool"):
        config_from_dict({"data": {"bucket_by_length": 1}})


def test_class_weight_is_balanced_or_a_mapping():
    assert config_from_dict({"train": {"class_weight": "balanced"}}).train.class_weight == "balanced"
    assert config_from_dict({"train": {"class_weight": {"other": 2}}}).train.class_weight == {
        "other": 2}
    with pytest.raises(ConfigError, match=r"train\.class_weight must be str or dict, got list"):
        config_from_dict({"train": {"class_weight": ["other"]}})
    with pytest.raises(ConfigError, match=r"train\.class_weight must be 'balanced'.*'even'"):
        config_from_dict({"train": {"class_weight": "even"}})
    with pytest.raises(ConfigError, match=r"train\.class_weight\.other must be a number >= 0"):
        config_from_dict({"train": {"class_weight": {"other": "a lot"}}})
    with pytest.raises(ConfigError, match=r"class_weight is for single-task.*loss_weights"):
        config_from_dict({"data": {"source": "tate", "heads": {"medium_family": "classification"}},
                          "model": {"name": "multitask"}, "train": {"class_weight": "balanced"}})


def test_int_is_accepted_for_float():
    assert config_from_dict({"train": {"learning_rate": 1}}).train.learning_rate == 1.0


def test_model_params_checked_against_builder_signature():
    with pytest.raises(ConfigError, match=r"model\.params\.unit .*Did you mean 'units'"):
        config_from_dict({"model": {"name": "text_lstm", "params": {"unit": 3}}})
    with pytest.raises(ConfigError, match=r"vocab_size is set from the data"):
        config_from_dict({"model": {"params": {"vocab_size": 3}}})
    with pytest.raises(ConfigError, match=r"Unknown model 'text_lstn'.*'text_lstm'"):
        config_from_dict({"model": {"name": "text_lstn"}})


def test_bad_choices_and_ranges():
    with pytest.raises(ConfigError, match=r"train\.optimizer .*Did you mean 'adam'"):
        config_from_dict({"train": {"optimizer": "adma"}})
    with pytest.raises(ConfigError, match=r"train\.strategy"):
        config_from_dict({"train": {"strategy": "gpu"}})
    with pytest.raises(ConfigError, match=r"data\.validation_fraction must be in"):
        config_from_dict({"data": {"validation_fraction": 1.5}})
    with pytest.raises(ConfigError, match=r"train\.monitor must be one of auto, val_loss, "
                                          r"val_accuracy, val_macro_f1, val_micro_f1; got 'val_f1'"):
        config_from_dict({"train": {"monitor": "val_f1"}})
    # auto: the score a user reads, where each epoch has one
    for data, monitor in (({}, "val_accuracy"), ({"validation_fraction": 0.0}, "val_loss"),
                          ({"source": "tate", "label_column": "tags", "multi_label": True},
                           "val_micro_f1"),
                          ({"source": "tate", "heads": {"medium_family": "classification",
                                                        "year": "regression"}}, "val_loss")):
        assert config_from_dict({"data": data}).train.monitor == monitor, data
    assert load_config(None).train.monitor == "val_accuracy"  # the default preset: auto
    assert load_config("fine_foods_text_lstm").train.monitor == "val_loss"  # as measured
    with pytest.raises(ConfigError, match=r"train\.histogram_freq must be >= 0 \(0: no histograms\)"):
        config_from_dict({"train": {"histogram_freq": -1}})


def test_learning_rate_schedules_decay_to_zero_over_the_run():
    config = load_config(None, ["train.epochs=2", "train.learning_rate=0.01",
                                "train.lr_schedule=constant"])
    assert learning_rate(config, replicas=1, steps_per_epoch=10) == 0.01
    for name, halfway in (("cosine", 0.005), ("linear", 0.005)):
        config.train.lr_schedule = name
        schedule = learning_rate(config, replicas=1, steps_per_epoch=10)
        values = [float(schedule(step)) for step in (0, 10, 20, 25)]
        assert values[0] == pytest.approx(0.01) and values[1] == pytest.approx(halfway)
        assert values[2] == values[3] == pytest.approx(0.0)  # steps past the end keep the last
    config.train.scale_learning_rate = True
    assert float(learning_rate(config, replicas=4, steps_per_epoch=10)(0)) == pytest.approx(0.04)
    with pytest.raises(ConfigError, match=r"train\.lr_schedule .*Did you mean 'cosine'"):
        config_from_dict({"train": {"lr_schedule": "cosin"}})


def test_linear_schedule_reaches_zero_in_a_real_run(tiny_csv):
    from conftest import tiny_overrides

    result = tfkit.train(None, tiny_overrides(tiny_csv, extra=[
        "train.lr_schedule=linear", "train.learning_rate=0.01", "train.epochs=2",
        "export.enabled=false"]))
    optimizer = result.model.optimizer
    assert optimizer.get_config()["learning_rate"]["class_name"] == "PolynomialDecay"
    assert int(optimizer.iterations) > 0
    assert float(optimizer.learning_rate) == pytest.approx(0.0)  # decayed over the whole run
    # and not earlier: the schedule's length is the run's real number of steps (length
    # buckets included), so no step trains at a rate of 0
    schedule = optimizer.get_config()["learning_rate"]["config"]
    assert schedule["decay_steps"] == int(optimizer.iterations)


def test_profile_batch_traces_the_chosen_training_steps(tiny_csv):
    """train.profile_batch: the TensorFlow profiler's trace (an XSpace proto, what
    TensorBoard's Profile tab reads) of training steps, under logs/train/plugins/profile."""
    from conftest import tiny_overrides
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    result = tfkit.train(None, tiny_overrides(tiny_csv, extra=[
        "train.profile_batch=[2, 3]", "export.enabled=false"]))
    (trace,) = (result.run_dir / "logs" / "train" / "plugins" / "profile").glob("*/*.xplane.pb")
    space = xplane_pb2.XSpace.FromString(trace.read_bytes())
    names = {meta.name for plane in space.planes for meta in plane.event_metadata.values()}
    # Keras's train function and the ops of its backward pass, as the CPU executed them
    assert any("step_on_iterator" in name for name in names), sorted(names)[:20]
    assert any("gradient_tape/text_lstm" in name and "lstm" in name.split("/")[2]
               for name in names), sorted(names)[:20]
    for bad in ("[3, 2]", "[0, 2]", "3", "[1, 2, 3]", "[1.5, 2]"):
        with pytest.raises(ConfigError, match=r"train\.profile_batch must be (\[start, stop\]|list)"):
            load_config(None, [f"train.profile_batch={bad}"])


def test_set_overrides_are_yaml_typed():
    config = load_config(None, ["train.epochs=2", "model.params.embedding_dim=8",
                                "export.enabled=false", "data.limit=null"])
    assert config.train.epochs == 2 and config.model.params["embedding_dim"] == 8
    assert config.export.enabled is False and config.data.limit is None


def test_exponents_are_numbers_in_files_and_overrides(tmp_path):
    """PyYAML (YAML 1.1) reads 1e-4 as a string; learning rates are written that way."""
    file = tmp_path / "mine.yaml"
    file.write_text("train:\n  learning_rate: 3e-4\nmodel:\n  name: text_lstm\n"
                    "  params: {head_dropout: 5E-1}\n")
    config = load_config(file, ["train.class_weight={good: 2e0}"])
    assert config.train.learning_rate == 3e-4 and config.model.params["head_dropout"] == 0.5
    assert config.train.class_weight == {"good": 2.0}
    assert load_config(None, ["train.learning_rate=1E-7"]).train.learning_rate == 1e-7
    assert load_config(None, ["name=1e5x"]).name == "1e5x"  # not a number: still a string


def test_set_override_errors():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match=r"train\.epochz"):
        load_config(None, ["train.epochz=2"])


def test_errors_name_the_set_that_caused_them(tmp_path):
    """A bad value typed with --set is named as such, not as if it were in the file."""
    cases = {("train.epochs=3", "train.epochs=0"): r"^--set train\.epochs=0: train\.epochs must be",
             ("model.name=text_lsmt",): r"^--set model\.name=text_lsmt: Unknown model 'text_lsmt'",
             ("data.split=chars", "train.epochs=2"): r"^--set data\.split=chars: data\.split must",
             ("model.params.unitz=3",): r"^--set model\.params\.unitz=3: Unknown argument"}
    for overrides, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            load_config(None, list(overrides))
    file = tmp_path / "mine.yaml"
    file.write_text("train:\n  epochs: 0\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: train\.epochs must be"):
        load_config(file, ["train.batch_size=4", "data.max_len=9"])


def test_missing_file_lists_presets(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist.*fine_foods_text_lstm"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_is_safe_loaded(tmp_path):
    file = tmp_path / "evil.yaml"
    file.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(file)


def test_round_trip(tmp_path):
    config = load_config(None, ["train.epochs=7", "model.params.buckets=5"])
    save_config(config, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == config
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["train"]["epochs"] == 7


def test_every_preset_loads():
    from tfkit.config import CONFIGS_DIR

    presets = sorted(CONFIGS_DIR.glob("*.yaml"))
    assert presets
    for preset in presets:
        assert isinstance(tfkit.load_config(preset), tfkit.Config)


def test_a_monitor_the_run_cannot_compute_is_refused():
    from tfkit.callbacks import monitored

    config = config_from_dict({"train": {"monitor": "val_macro_f1"}})
    assert monitored(config, True, None, False) == "val_macro_f1"
    with pytest.raises(ConfigError, match=r"needs a validation split"):
        monitored(config, False, None, False)
    with pytest.raises(ConfigError, match=r"not offered under multi-worker training"):
        monitored(config, True, None, True)
    with pytest.raises(ConfigError, match=r"multi-task model has per-head metrics"):
        monitored(config, True, {"medium_family": {"num_classes": 3}}, False)
    default = config_from_dict({})
    assert monitored(default, True, None, True) == "val_accuracy"
    unsplit = config_from_dict({"data": {"validation_fraction": 0.0}})
    assert monitored(unsplit, False, None, False) == "loss"  # no validation: training loss


def test_serving_root_is_an_absolute_path_or_a_url():
    for root in ("/models", "/srv/tf/", "gs://bucket/models", "s3://b/m"):
        assert config_from_dict({"export": {"serving_root": root}}).export.serving_root == root
    for root in ("models", "./saved_models", ""):
        with pytest.raises(ConfigError, match=r"export\.serving_root must be the absolute path"):
            config_from_dict({"export": {"serving_root": root}})


def test_a_distillation_temperature_that_only_adds_noise_is_refused():
    """At 1e6 both softened distributions are uniform to float precision, and temperature²
    (1e12) times their rounding noise trained with a negative loss."""
    for value in ("1e6", "101", ".inf"):
        with pytest.raises(ConfigError, match=r"distill_temperature must be a finite number > 0 "
                                              r"and at most 100"):
            load_config(None, [f"train.distill_temperature={value}"])
    assert load_config(None, ["train.distill_temperature=100"]).train.distill_temperature == 100
