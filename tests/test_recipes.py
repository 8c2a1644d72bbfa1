"""The recipe files of ``recipes/``: each loads as a TrainConfig, names a registered model that builds with its
kwargs, says where its numbers come from, and goes through ``train --config --print-config``; the CIFAR recipe
is the one of ``compare --preset cifar``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from attnvision import create_model, list_models
from attnvision.cli.main import main
from attnvision.compare.plan import PRESETS
from attnvision.data.augment import AUGMENT_FIELDS, check_augment
from attnvision.train import TrainConfig
from attnvision.train.config import load_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
FILES = sorted(RECIPES.glob("*.yaml"))


def test_the_recipes_named_in_the_docs_are_there():
    assert {p.name for p in FILES} >= {"cbam_resnet50_imagenet.yaml", "se_resnet50_imagenet.yaml",
                                       "eca_resnet50_imagenet.yaml", "van_b0_imagenet.yaml", "cifar_resnet110.yaml"}


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_recipe_loads_and_names_a_model_that_builds(path):
    values = load_config(str(path))
    cfg = TrainConfig(**values)
    assert cfg.model in list_models()
    with torch.device("meta"):
        create_model(cfg.model, **cfg.model_kwargs)
    check_augment("train", **{k: getattr(cfg, k) for k in AUGMENT_FIELDS})  # as train checks them
    assert values["data"].split(":")[0] in ("imagefolder", "cifar10")  # a placeholder to override with --data
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#") and "§" in text  # the paper section its numbers come from
    assert "--data" in text  # the comment says how to point it at the data


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_print_config_of_every_recipe_gives_its_values_and_takes_a_data_override(path, capsys):
    assert main(["train", "--config", str(path), "--data", "imagefolder:/elsewhere", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = {k: list(v) if isinstance(v, tuple) else v for k, v in load_config(str(path)).items()}
    assert {k: printed[k] for k in expected if k != "data"} == {k: v for k, v in expected.items() if k != "data"}
    assert printed["data"] == "imagefolder:/elsewhere"


def test_the_cifar_recipe_is_the_compare_preset():
    preset = PRESETS["cifar"]
    values = load_config(str(RECIPES / "cifar_resnet110.yaml"))
    assert values["model"] == preset["models"][0] and values["epochs"] == preset["epochs"]
    assert {k: v for k, v in values.items() if k not in ("model", "epochs", "data")} == preset["recipe"]
