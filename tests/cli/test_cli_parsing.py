"""The command line refuses what it does not know in one line, with the closest option: no abbreviations,
JSON mistakes located, and a reader that goes away (``| head``) ends it quietly."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from attnvision.cli.main import BROKEN_PIPE, COMMANDS, build_parser, main
from tools import doc_tables as tables


def _one_line(capsys, prog: str) -> str:
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: ") and "usage:" not in err, err
    assert captured.out == ""
    return err


def test_no_parser_takes_abbreviations():
    parser = build_parser()
    assert sorted(parser.commands) == sorted(COMMANDS)
    assert parser.allow_abbrev is False
    assert all(p.allow_abbrev is False for p in parser.commands.values())


@pytest.mark.parametrize("argv, meant", [
    (["train", "--epoch", "3"], "--epochs"),
    (["train", "--batch", "64"], "--batch-size"),
    (["train", "--epoch=3", "--model", "resnet20"], "--epochs"),
    (["train", "--threds", "2"], "--threads"),
    (["eval", "--checkpoin", "x.pt"], "--checkpoint"),
    (["profile", "resnet20", "--jsn"], "--json"),
    (["compare", "--seed", "2"], "--seeds"),
])
def test_an_unknown_option_is_one_line_with_the_option_meant(tmp_path, capsys, argv, meant):
    assert main([*argv, "--out", str(tmp_path / "out")] if argv[0] == "train" else argv) == 2
    err = _one_line(capsys, f"attnvision {argv[0]}")
    typo = next(a for a in argv if a.startswith("--")).split("=")[0]
    assert f"unknown option {typo}; did you mean {meant}" in err
    assert not (tmp_path / "out").exists()


def test_an_unknown_option_is_named_before_a_missing_one_it_was_meant_to_be(capsys):
    assert main(["cam", "--model", "resnet20", "--imag", "x.png"]) == 2
    assert "unknown option --imag; did you mean --image?" in _one_line(capsys, "attnvision cam")


def test_an_option_nothing_resembles_points_to_help(capsys):
    assert main(["train", "--zzzzzz"]) == 2
    assert "unknown option --zzzzzz (`attnvision train --help` lists the options)" in _one_line(
        capsys, "attnvision train")


def test_an_unknown_command_is_one_line_with_the_command_meant(capsys):
    assert main(["trian", "--epochs", "1"]) == 2
    err = _one_line(capsys, "attnvision")
    assert "unknown command 'trian'; did you mean 'train'?" in err and all(c in err for c in COMMANDS)


def test_other_refusals_of_argparse_are_one_line_too(capsys):
    assert main(["train", "--opt", "rmsprop"]) == 2
    assert "argument --opt: invalid choice: 'rmsprop'" in _one_line(capsys, "attnvision train")
    assert main(["models", "resnet*", "extra"]) == 2
    assert "unexpected argument extra" in _one_line(capsys, "attnvision models")


@pytest.mark.parametrize("command", [["train"], ["eval"], ["cam", "--image", "x.png"], ["compare"],
                                     ["profile", "resnet20"]])
@pytest.mark.parametrize("text", ['{"stem": imagenet}', '{"a": 1,}', '{"a": 1', '{"a" 1}\n'])
def test_bad_json_says_where_it_fails(capsys, command, text):
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads(text)
    e = info.value
    assert main([*command, "--model-kwargs", text]) == 2
    err = _one_line(capsys, f"attnvision {command[0]}")
    assert (f"argument --model-kwargs: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno} "
            f"(char {e.pos})") in err


def test_json_that_is_not_an_object_is_refused(capsys):
    assert main(["profile", "resnet20", "--model-kwargs", "[1, 2]"]) == 2
    assert "--model-kwargs: expected a JSON object" in _one_line(capsys, "attnvision profile")


def test_the_readme_tables_tool_takes_no_abbreviations(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:  # with abbreviations, --wri would be --write
        tables.main([str(tmp_path / "absent.md"), "--check", "--wri"])
    assert info.value.code == 2 and "unrecognized arguments: --wri" in capsys.readouterr().err


def test_a_reader_that_has_gone_ends_the_command_quietly(monkeypatch):
    read, write = os.pipe()
    os.close(read)
    stdout = os.fdopen(write, "w")
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        assert main(["models"]) == BROKEN_PIPE
    finally:
        stdout.close()  # what was left buffered went to /dev/null


def test_piping_into_a_closed_reader_prints_no_traceback():
    read, write = os.pipe()
    os.close(read)  # like `| head` that has read its lines: every write fails
    try:
        done = subprocess.run([sys.executable, "-m", "attnvision", "models"], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == BROKEN_PIPE and done.stderr == ""
