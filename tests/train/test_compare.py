"""The comparison grid: one row per run, mean ± std per setting, resumable, extensible by one column."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from attnvision.cli.main import main
from attnvision.compare import (
    BASE_COLUMNS,
    RUN_METRICS,
    compare,
    group,
    parse_sets,
    plan,
    register_run_metric,
    run_config,
    write_results,
)
from attnvision.train import evaluate
from attnvision.train.stats import t_quantile
from attnvision.train.trainer import TrainConfig

GRID = dict(models=["resnet20", "resnet20_se"], settings=parse_sets(["attn_kwargs.reduction=4,8"]),
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
    # the baseline has no attention to reduce: it runs once per seed, without the setting
    assert len(table) == 3 * 2
    assert {(r["model"], r["settings"], r["seed"]) for r in table} == {
        ("resnet20_se", f"attn_kwargs.reduction={r}", str(s)) for r in (4, 8) for s in (0, 1)} | {
        ("resnet20", "-", str(s)) for s in (0, 1)}
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
    assert md.count("| `resnet20_se`") == 2 and "mean ± std over 2 seeds" in md and md.count("| `resnet20` ") == 1


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
        RUN_METRICS.unregister("recomputed_acc1")
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
    from attnvision.compare import RunContext
    from attnvision.data import create_dataset
    from attnvision.explain import explanation_scores

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


def test_throughput_is_measured_once_per_model_apart_from_training(grid):
    out, rows = grid
    stored = json.loads((out / "throughput.json").read_text())
    assert set(stored) == {"resnet20", "resnet20_se__attn_kwargs.reduction=4", "resnet20_se__attn_kwargs.reduction=8"}
    for r in rows:
        name = r["model"] if r["settings"] == "-" else f"{r['model']}__{r['settings']}"
        assert r["train_images_per_s"] == stored[name]["train_images_per_s"] > 0
        assert r["infer_images_per_s"] == stored[name]["infer_images_per_s"] > 0
        assert stored[name]["when"]["threads"] == 1


def test_settings_apply_only_to_the_models_they_change():
    base = TrainConfig(model_kwargs={"stem": "imagenet"})
    grid = plan(["resnet20", "resnet20_se", "resnet20_eca"], parse_sets(["attn_kwargs.reduction=4,8"]), 3, base)
    assert grid.runs == [(m, {}, k) for m in ("resnet20",) for k in range(3)] + [
        ("resnet20_se", {"attn_kwargs.reduction": 4}, k) for k in range(3)] + [
        ("resnet20_eca", {}, k) for k in range(3)] + [
        ("resnet20_se", {"attn_kwargs.reduction": 8}, k) for k in range(3)]
    assert grid.unaffected == {"attn_kwargs.reduction": ["resnet20", "resnet20_eca"]}
    assert set(grid.partner.values()) == {("resnet20", "-")}
    # a training setting changes every model: each value pairs with the baseline trained the same way
    grid = plan(["resnet20", "resnet20_se"], parse_sets(["train.lr=0.1,0.05"]), 1, base)
    assert len(grid.runs) == 4 and grid.partner[("resnet20_se", "train.lr=0.05")] == ("resnet20", "train.lr=0.05")
    assert grid.unaffected == {}
    with pytest.raises(ValueError, match="--set attn_kwargs.reducton changes none of the models"):
        plan(["resnet20", "resnet20_se"], parse_sets(["attn_kwargs.reducton=4"]), 1, base)


def test_student_t_quantiles_match_the_tables():
    # two-sided 95% critical values of Student's t (any statistics table)
    for df, expected in [(1, 12.706205), (2, 4.302653), (3, 3.182446), (4, 2.776445), (10, 2.228139), (30, 2.042272)]:
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)
    assert t_quantile(0.95, 5) == pytest.approx(2.015048, abs=1e-6)
    assert t_quantile(0.025, 2) == -t_quantile(0.975, 2) and t_quantile(0.5, 7) == 0.0


def _rows(values: dict[str, list[float]], energy: dict[str, list[float]] | None = None) -> list[dict]:
    base = dict(zip(BASE_COLUMNS, ["", "-", 0, 0.0, 90.0, 0.0, 1000, 1_000_000, 1.0, 1.0, 1.0]))
    rows = []
    for model, accs in values.items():
        for seed in reversed(range(len(accs))):  # out of seed order: pairing must go by seed, not position
            extra = {"cam_energy": energy[model][seed]} if energy else {}
            rows.append(dict(base, model=model, seed=seed, val_acc1=accs[seed], best_val_acc1=accs[seed], **extra))
    return rows


def test_paired_differences_and_their_interval_by_hand(tmp_path, capsys):
    from attnvision.cli.compare import summary_table

    rows = _rows({"plain": [78.0, 81.0, 80.0], "se": [80.0, 82.0, 84.0], "cbam": [79.0, 83.0, 82.0]},
                 energy={"plain": [0.30, 0.31, 0.29], "se": [0.30, 0.33, 0.28], "cbam": [0.40, 0.42, 0.41]})
    groups = {g["model"]: g for g in group(rows)}
    assert groups["plain"]["paired"] is None
    se = groups["se"]["paired"]["val_acc1"]
    # differences 2, 1, 4: mean 7/3, sd sqrt(7/3), half-width t_{0.975,2} · sd / sqrt(3)
    half = 4.302653 * (7 / 3) ** 0.5 / 3 ** 0.5
    assert (se.mean, se.low, se.high) == pytest.approx((7 / 3, 7 / 3 - half, 7 / 3 + half), abs=1e-5)
    assert not se.excludes_zero
    cbam = groups["cbam"]["paired"]["val_acc1"]   # differences 1, 2, 2: the interval stays above 0
    half = 4.302653 * (1 / 3) ** 0.5 / 3 ** 0.5
    assert (cbam.low, cbam.high) == pytest.approx((5 / 3 - half, 5 / 3 + half), abs=1e-5) and cbam.excludes_zero
    assert groups["cbam"]["paired"]["cam_energy"].excludes_zero

    write_results(rows, str(tmp_path), dict(data="cluttered-digits", epochs=1, seeds=3, recipe={}, jobs=1))
    md = (tmp_path / "results.md").read_text()
    cbam_row = next(line for line in md.splitlines() if "`cbam`" in line)
    assert f"+1.67 [{5 / 3 - half:+.2f}, {5 / 3 + half:+.2f}] *" in cbam_row
    assert " *" not in next(line for line in md.splitlines() if "`se`" in line).split("|")[5]
    table = summary_table(rows)
    lines = {line.split()[0]: line for line in table.splitlines()[2:5]}
    assert "higher beyond seed spread" in lines["cbam"] and "more beyond seed spread" in lines["cbam"]
    assert "within seed spread" in lines["se"] and "baseline" in lines["plain"]
    assert "3 seeds per model" in table and "95% Student-t interval" in table


def test_one_seed_shows_no_spread_and_no_interval(tmp_path):
    from attnvision.cli.compare import summary_table

    rows = _rows({"plain": [78.0], "se": [80.5]})
    write_results(rows, str(tmp_path), dict(data="digits", epochs=1, seeds=1, recipe={}, jobs=1))
    md, table = (tmp_path / "results.md").read_text(), summary_table(rows)
    assert "±" not in md and "±" not in table
    assert "| +2.50 " in md and "one seed: no interval" in table and "1 seed" in table


def test_cifar_preset_trains_with_he_et_al_schedule(tmp_path, capsys):
    from attnvision.compare import PRESETS
    from attnvision.train.optim import create_scheduler

    preset = PRESETS["cifar"]
    assert preset["models"] == ["resnet110", "resnet110_se", "resnet110_eca", "resnet110_bam", "resnet110_cbam"]
    assert preset["epochs"] == 164
    rows = compare(["resnet20"], preset="cifar", data="synthetic:3x32x32", epochs=1, seeds=1, out=str(tmp_path),
                   progress=False)
    config = json.loads((tmp_path / "runs" / "resnet20" / "seed0" / "summary.json").read_text())["config"]
    assert {k: config[k] for k in ("batch_size", "lr", "opt", "momentum", "weight_decay", "sched")} == dict(
        batch_size=128, lr=0.1, opt="sgd", momentum=0.9, weight_decay=1e-4, sched="step")
    assert list(config["step_milestones"]) == [82, 123] and len(rows) == 1
    # the rate is divided by 10 at 50% and 75% of 164 epochs (391 steps an epoch on CIFAR's 50,000 images)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = create_scheduler(opt, "step", total_steps=164 * 391, milestones=(82 * 391, 123 * 391))
    assert [sched.lr_lambdas[0](s) for s in (0, 82 * 391 - 1, 82 * 391, 123 * 391)] == pytest.approx([1, 1, 0.1, 0.01])
    with pytest.raises(ValueError, match="the 'cifar' preset needs data"):
        compare(preset="cifar", out=str(tmp_path))
    assert main(["compare", "--preset", "cifar", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "attnvision compare: error: the 'cifar' preset needs data" in err and not (tmp_path / "x").exists()


def test_detection_compare_pairs_backbones_by_map_seed_by_seed(tmp_path, monkeypatch, capsys):
    from attnvision.cli.compare import summary_table
    from attnvision.data.dense import ClutteredDigitsDense
    from attnvision.tasks.dense import DetectionTask

    canvases = ClutteredDigitsDense("val", "detection", length=4)
    monkeypatch.setattr(DetectionTask, "datasets", lambda self, cfg, pc=None: (canvases, canvases))
    rows = compare(["resnet20", "resnet20_se"], task="detection", epochs=1, seeds=2, out=str(tmp_path),
                   progress=False, recipe=dict(batch_size=4, threads=1, model_kwargs=dict(
                       fpn_channels=16, box_head_width=32, backbone_kwargs=dict(stem="imagenet"))))
    table = _csv(tmp_path / "results.csv")
    assert list(table[0])[:7] == ["model", "settings", "seed", "val_map", "val_map_50", "val_map_75", "best_val_map"]
    assert [(r["model"], r["seed"]) for r in table] == [("resnet20", "0"), ("resnet20", "1"), ("resnet20_se", "0"),
                                                        ("resnet20_se", "1")]
    record = json.loads((tmp_path / "runs" / "resnet20_se" / "seed1" / "run.json").read_text())
    assert (record["task"], record["model"], record["backbone"]) == ("detection", "fasterrcnn", "resnet20_se")
    groups = {g["model"]: g for g in group(rows, rows.partner)}
    by = {(r["model"], r["seed"]): r["val_map"] for r in rows}
    diffs = [by[("resnet20_se", k)] - by[("resnet20", k)] for k in (0, 1)]
    assert groups["resnet20_se"]["paired"]["val_map"].mean == pytest.approx(sum(diffs) / 2)
    assert groups["resnet20"]["paired"] is None
    printed = summary_table(rows)
    assert printed.splitlines()[0].split()[:4] == ["backbone", "settings", "mAP", "Δ"]
    assert "mAP" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize("argv,message", [
    (["--task", "detection"], "--task detection compares the backbones given (--backbones A,B,...)"),
    (["--task", "detection", "--models", "resnet20"], "--task detection compares --backbones under one head"),
    (["--backbones", "resnet20,resnet20_se"], "--backbones and --model go with --task detection|segmentation"),
])
def test_compare_refuses_dense_options_that_do_not_fit_in_one_line(tmp_path, capsys, argv, message):
    assert main(["compare", *argv, "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "c").exists()
