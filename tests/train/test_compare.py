"""The comparison grid: one row per run, mean ± std per setting, resumable, extensible by one column."""
from __future__ import annotations

import csv
import json

import pytest

from attnvision.cli.main import main
from attnvision.train import evaluate
from attnvision.train.compare import BASE_COLUMNS, RUN_METRICS, compare, parse_sets, register_run_metric, run_config
from attnvision.train.trainer import TrainConfig

GRID = dict(models=["resnet20_se"], settings=parse_sets(["attn_kwargs.reduction=4,8"]),
            data="synthetic:1x16x16", epochs=1, seeds=2, progress=False,
            recipe=dict(batch_size=128, lr=0.05, model_kwargs=dict(stem="imagenet"), threads=1))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    return out, compare(out=str(out), **GRID)


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_results_csv_has_one_row_per_run_and_the_contracted_columns(grid):
    out, rows = grid
    table = _csv(out / "results.csv")
    assert list(table[0]) == list(BASE_COLUMNS)
    assert len(table) == 2 * 2
    assert {(r["model"], r["settings"], r["seed"]) for r in table} == {
        (m, f"attn_kwargs.reduction={r}", str(s)) for m in GRID["models"] for r in (4, 8) for s in (0, 1)}
    params = {(r["model"], r["settings"]): int(r["params"]) for r in table}
    # the setting reached the model: SE's reduction changes its size
    assert params[("resnet20_se", "attn_kwargs.reduction=4")] > params[("resnet20_se", "attn_kwargs.reduction=8")]
    assert all(0 <= float(r["val_acc1"]) <= 100 and int(r["macs"]) > 0 for r in table)


def test_results_md_gives_mean_and_std_over_seeds(grid):
    out, rows = grid
    md = (out / "results.md").read_text()
    se4 = [float(r["val_acc1"]) for r in rows if r["model"] == "resnet20_se" and r["settings"].endswith("=4")]
    import statistics
    line = next(s for s in md.splitlines() if "`resnet20_se`" in s and "reduction=4" in s)
    assert f"{statistics.fmean(se4):.2f} ± {statistics.stdev(se4):.2f}" in line
    assert md.count("| `resnet20_se`") == 2 and "2 seed(s)" in md


def test_results_png_is_written(grid):
    assert (grid[0] / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finished_runs_are_reused_and_a_registered_metric_adds_a_column(grid):
    out, first = grid

    def recomputed_acc1(ctx):
        return evaluate(ctx.model, ctx.val_set).acc1

    register_run_metric("recomputed_acc1", recomputed_acc1)
    try:
        rows = compare(out=str(out), **GRID)
    finally:
        RUN_METRICS.pop("recomputed_acc1")
    assert [r["seconds"] for r in rows] == [r["seconds"] for r in first]  # nothing was trained again
    table = _csv(out / "results.csv")
    assert list(table[0])[-1] == "recomputed_acc1"
    for r in rows:  # the metric saw the run's final weights
        assert r["recomputed_acc1"] == pytest.approx(r["val_acc1"], abs=1e-9)
    assert "recomputed_acc1" in (out / "results.md").read_text()
    summary = json.loads((out / "runs" / "resnet20_se__attn_kwargs.reduction=4" / "seed0" / "summary.json").read_text())
    assert "recomputed_acc1" in summary["run_metrics"]


def test_settings_grid_and_dotted_keys():
    grid = parse_sets(["attn_kwargs.reduction=8,16", "train.lr=0.1,0.05", "stem=cifar"])
    assert len(grid) == 4 and grid[0] == {"attn_kwargs.reduction": 8, "train.lr": 0.1, "stem": "cifar"}
    cfg = run_config("resnet20_cbam", grid[3], 1, TrainConfig(model_kwargs={"attn_kwargs": {"spatial_kernel": 3}}))
    assert cfg.model_kwargs == {"attn_kwargs": {"spatial_kernel": 3, "reduction": 16}, "stem": "cifar"}
    assert cfg.lr == 0.05 and cfg.seed == 1 and cfg.model == "resnet20_cbam"
    with pytest.raises(ValueError, match="--set takes KEY=V1,V2"):
        parse_sets(["reduction"])
    with pytest.raises(ValueError, match="'train.speed' is not a training setting"):
        parse_sets(["train.speed=1"])


def test_compare_command_runs_a_small_grid(tmp_path, capsys):
    assert main(["compare", "--models", "resnet20_eca", "--data", "synthetic:1x16x16", "--epochs", "1", "--seeds",
                 "1", "--batch-size", "128", "--model-kwargs", '{"stem": "imagenet"}', "--jobs", "1", "--threads", "1",
                 "--out", str(tmp_path)]) == 0
    assert len(_csv(tmp_path / "results.csv")) == 1
    assert "resnet20_eca" in capsys.readouterr().out


def test_data_with_boxes_gains_the_explanation_columns(tmp_path):
    import attnvision as av
    from attnvision.data import create_dataset
    from attnvision.explain import explanation_scores
    from attnvision.train.compare import RunContext, write_results

    val = create_dataset("cluttered-digits", "val")
    model = av.create_model("resnet20_cbam", num_classes=10, in_chans=1, stem="imagenet").eval()
    ctx = RunContext(model=model, val_set=val, summary={}, run_dir=str(tmp_path))
    energy, pointing = RUN_METRICS["cam_energy"](ctx), RUN_METRICS["pointing_game"](ctx)
    expected = explanation_scores(model, val)
    assert energy == pytest.approx(expected["energy_in_box"]) and pointing == pytest.approx(expected["pointing_game"])
    assert 0 < energy < 1 and 0 <= pointing <= 1
    no_boxes = RunContext(model=model, val_set=create_dataset("synthetic:1x16x16", "val"), summary={}, run_dir="")
    assert RUN_METRICS["cam_energy"](no_boxes) is None

    base = dict(zip(BASE_COLUMNS, ["resnet20_cbam", "-", 0, 50.0, 90.0, 50.0, 1, 1, 1.0, 1.0, 1.0]))
    rows = [dict(base, seed=k, cam_energy=energy, pointing_game=pointing) for k in (0, 1)]
    write_results(rows, str(tmp_path), dict(data="cluttered-digits", epochs=1, seeds=2, recipe={}, jobs=1))
    table = _csv(tmp_path / "results.csv")
    assert list(table[0])[-2:] == ["cam_energy", "pointing_game"]
    assert float(table[0]["cam_energy"]) == pytest.approx(energy, rel=1e-5)
    assert "cam_energy" in (tmp_path / "results.md").read_text()
