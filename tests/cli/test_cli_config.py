"""One schema for the command line, config files and TrainConfig: generated flags, --config, --print-config."""
from __future__ import annotations

import json

import pytest
import yaml

from attnvision.cli.main import build_parser, main
from attnvision.train import TrainConfig
from attnvision.train.config import config_from_dict, dump_config, load_config


def _printed(capsys, argv) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def test_every_field_of_train_config_is_a_train_flag_and_every_recipe_field_a_compare_flag():
    parser = build_parser()
    train_flags = set(parser.commands["train"].option_strings())
    compare_flags = set(parser.commands["compare"].option_strings())
    for name, f in TrainConfig.__dataclass_fields__.items():
        if not f.metadata["cli"]:
            continue
        flag = "--" + name.replace("_", "-")
        assert flag in train_flags or f"--no-{flag[2:]}" in train_flags, name
    for name in ("lr", "opt", "batch_size", "weight_decay", "mixup_alpha", "layer_decay", "accum_steps", "ema"):
        assert "--" + name.replace("_", "-") in compare_flags, name


def test_print_config_is_loadable_and_gives_the_same_config_back(tmp_path, capsys):
    text = _printed(capsys, ["train", "--model", "resnet20", "--epochs", "2", "--lr", "0.05", "--input-size", "1", "28",
                             "28", "--step-milestones", "1", "2", "--model-kwargs", '{"stem": "cifar"}',
                             "--no-progress", "--print-config"])
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    values = load_config(str(path))
    expected = TrainConfig(model="resnet20", epochs=2, lr=0.05, input_size=(1, 28, 28), step_milestones=(1.0, 2.0),
                           model_kwargs={"stem": "cifar"}, progress=False, out="runs/train")
    assert TrainConfig(**values) == expected
    assert _printed(capsys, ["train", "--config", str(path), "--print-config"]) == text
    assert not (tmp_path / "runs").exists()


def test_flags_on_the_command_line_override_the_config_file(tmp_path, capsys):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(dict(model="resnet20_cbam", epochs=5, lr=0.1, opt="adamw")))
    printed = yaml.safe_load(_printed(capsys, ["train", "--config", str(path), "--lr", "0.01", "--print-config"]))
    assert (printed["model"], printed["epochs"], printed["lr"], printed["opt"]) == ("resnet20_cbam", 5, 0.01, "adamw")


def test_a_run_record_starts_a_new_run_with_its_recipe(tmp_path, capsys):
    run = tmp_path / "old"
    run.mkdir()
    config = TrainConfig(model="resnet20_se", epochs=3, lr=0.02, out=str(run)).to_dict()
    record = dict(model="resnet20_se", model_kwargs={}, num_classes=10, in_chans=1, pretrained_cfg={}, config=config)
    (run / "run.json").write_text(json.dumps(record))
    printed = yaml.safe_load(_printed(capsys, ["train", "--config", str(run / "run.json"), "--out",
                                               str(tmp_path / "new"), "--print-config"]))
    assert (printed["model"], printed["epochs"], printed["lr"], printed["out"]) == ("resnet20_se", 3, 0.02,
                                                                                  str(tmp_path / "new"))


@pytest.mark.parametrize("content, suffix, message", [
    ("lrr: 0.1\n", "yaml", "unknown config key 'lrr'; did you mean 'lr'?"),
    ("epochs: 1.5\n", "yaml", "epochs must be an integer, got 1.5"),
    ("opt: adam\n", "yaml", "opt must be one of ('sgd', 'adamw'), got 'adam'"),
    ("input_size: [1, 28]\n", "yml", "input_size must hold 3 values, got 2"),
    ("model: [resnet20\n", "yaml", "is not valid YAML"),
    ('{"epochs": 2,}', "json", "is not valid JSON"),
    ("epochs: 2\n", "toml", "a config file is .yaml, .yml or .json"),
])
def test_bad_config_files_are_one_line_errors_and_write_nothing(tmp_path, capsys, content, suffix, message):
    path = tmp_path / f"recipe.{suffix}"
    path.write_text(content)
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--model", "resnet20", "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and err.startswith("attnvision train: error:")
    assert not out.exists()


def test_resume_and_config_exclude_each_other(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text("epochs: 2\n")
    assert main(["train", "--config", str(path), "--resume", str(tmp_path)]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_config_round_trip_in_python():
    cfg = TrainConfig(model="van_b0", input_size=(3, 32, 32), step_milestones=(3.0,), model_kwargs={"a": [1, 2]})
    assert TrainConfig(**config_from_dict(yaml.safe_load(dump_config(cfg.to_dict())))) == cfg
