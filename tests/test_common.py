"""Tests of the experiments' shared plumbing: configs, work directories."""

import json

import jax
import pytest

from autosparse_jax import models
from experiments import common

PAI = "experiments/configs/pai_fmnist_lenet300.py"


def test_workdir_with_another_config_is_refused(tmp_path):
    config = common.load_config(PAI)
    common.prepare_workdir(str(tmp_path), config)
    other = common.load_config(PAI, quick=True)
    with pytest.raises(ValueError, match="different config"):
        common.prepare_workdir(str(tmp_path), other)
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(
        json.dumps(config.to_dict())
    )


def test_parse_args_loads_the_quick_variant_and_its_workdir():
    args, config, workdir = common.parse_args("d", PAI, ["--quick"])
    assert args.quick and config.seeds == (0,) and config.train.num_epochs == 1
    assert workdir == "experiments/results/pai_fmnist_lenet300/quick"
    _, full, workdir = common.parse_args("d", PAI, ["--workdir", "w"])
    assert full.seeds == (0, 1, 2) and workdir == "w"


def test_jsonl_drops_a_half_written_last_line_and_ends_it_before_appending(tmp_path):
    path = str(tmp_path / "history.jsonl")
    common.append_jsonl(path, {"round": 0})
    with open(path, "a") as f:
        f.write('{"round": 1, "spars')  # killed while appending
    with pytest.warns(UserWarning, match=r"skipped unreadable line\(s\) \[2\]"):
        assert common.read_jsonl(path) == [{"round": 0}]
    common.append_jsonl(path, {"round": 1})
    with pytest.warns(UserWarning, match=r"line\(s\) \[2\]"):
        assert common.read_jsonl(path) == [{"round": 0}, {"round": 1}]
    assert (tmp_path / "history.jsonl").read_text().endswith('\n{"round": 1}\n')


def test_loaded_config_is_locked_but_its_fields_can_be_overridden():
    config = common.load_config(PAI)
    config.train.learning_rate = 0.5  # an existing field: fine
    assert config.train.learning_rate == 0.5
    with pytest.raises(AttributeError, match="learnig_rate"):
        config.train.learnig_rate = 0.1


def test_cpu_twin_is_the_fastest_same_params_build_on_cpu():
    assert jax.default_backend() == "cpu"  # the test machine's backend
    lenet5 = models.get_model("lenet5", num_classes=7)
    twin = common.cpu_twin(lenet5)
    assert isinstance(twin, models.BatchParts) and twin.parts == 2
    assert twin.module == lenet5.clone(batch_minor=True)
    vgg = common.cpu_twin(models.get_model("vgg11_bn", num_classes=7))
    assert vgg == models.get_model("vgg11_bn", num_classes=7, fast_conv_grad=True)
    recipe = common.make_recipe(common.load_config(PAI, quick=True), 2000)
    assert recipe.trained_model == recipe.model.clone(fast_conv_grad=True)
