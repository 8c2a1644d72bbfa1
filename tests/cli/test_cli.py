"""The command line parses and calls the library."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from attnvision.cli.main import main


def test_models_lists_names_matching_a_pattern(capsys):
    assert main(["models", "resnet50_*"]) == 0
    assert capsys.readouterr().out.split() == ["resnet50_bam", "resnet50_cbam", "resnet50_eca", "resnet50_se"]


def test_models_count_prints_parameters(capsys):
    assert main(["models", "resnet50_se", "--count"]) == 0
    assert "28,088,024" in capsys.readouterr().out


def test_profile_prints_params_and_macs(capsys):
    assert main(["profile", "resnet50_cbam"]) == 0
    out = capsys.readouterr().out
    assert "28,089,624" in out and "convolution" in out
    assert main(["profile", "resnet20", "--input-size", "3", "32", "32", "--num-classes", "10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == 269_722 and data["input_size"] == [1, 3, 32, 32]


def test_unknown_model_is_an_error_with_suggestion(capsys):
    assert main(["profile", "resnet50_cbma"]) == 2
    assert "did you mean 'resnet50_cbam'" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_cli():
    out = subprocess.run([sys.executable, "-m", "attnvision", "models", "resnet18_s*"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["resnet18_se"]


def test_models_count_shows_a_bar_over_the_models_on_stderr(capsys):
    assert main(["models", "resnet20*", "--count"]) == 0
    captured = capsys.readouterr()
    assert "counting" in captured.err and "0/5" in captured.err  # a bar over the 5 models (it clears itself at the end)
    assert "resnet20_cbam" in captured.out and "counting" not in captured.out


def test_models_count_names_the_head_it_counts(capsys):
    assert main(["models", "resnet18", "--count"]) == 0
    header, _, row = capsys.readouterr().out.splitlines()
    assert "params (1000 classes)" in header and "11,689,512" in row


def test_profile_takes_c_h_w_or_b_c_h_w(capsys):
    assert main(["profile", "resnet20", "--num-classes", "10", "--input-size", "2", "3", "32", "32", "--json"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert main(["profile", "resnet20", "--num-classes", "10", "--input-size", "3", "32", "32", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert two["input_size"] == [2, 3, 32, 32] and one["input_size"] == [1, 3, 32, 32]
    assert two["macs"] == 2 * one["macs"]


@pytest.mark.parametrize("args, message", [
    (["--input-size", "3", "32"], "--input-size takes C H W or B C H W, got 2 numbers"),
    (["--input-size", "2", "3", "32", "32", "--batch-size", "3"], "--batch-size 3 contradicts the batch 2"),
])
def test_profile_rejects_bad_sizes_in_one_line(capsys, args, message):
    assert main(["profile", "resnet20", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
