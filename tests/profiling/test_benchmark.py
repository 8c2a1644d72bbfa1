"""attnvision.profiling.benchmark and `attnvision benchmark`: what is measured and how it is derived
(no timings asserted)."""
from __future__ import annotations

import csv

import pytest
import torch

import attnvision as av
from attnvision.cli.main import main
from attnvision.profiling.benchmark import benchmark, interleaved_medians, peak_memory_mib

SMALL = dict(batch_size=2, input_size=(3, 16, 16), repeats=1, warmup=0, num_classes=10, gemm_size=64)


def test_results_follow_the_order_given_and_derive_rates_from_macs_and_the_gemm_peak():
    threads = torch.get_num_threads()
    results, peak = benchmark(["resnet20_cbam", "resnet20"], threads=1, **SMALL)
    assert torch.get_num_threads() == threads  # restored
    assert [r.name for r in results] == ["resnet20_cbam", "resnet20"] and peak > 0
    for r in results:
        p = av.profile(av.create_model(r.name, num_classes=10), (1, 3, 16, 16))
        assert (r.params, r.macs, r.input_size) == (p.params, p.macs, (3, 16, 16))
        assert r.infer_gflops == pytest.approx(2 * r.macs * r.infer_images_per_s / 1e9)
        assert r.infer_peak_fraction == pytest.approx(r.infer_gflops / peak)
        assert r.train_gflops == pytest.approx(3 * 2 * r.macs * r.train_images_per_s / 1e9)
        assert r.train_peak_mib > 0 and r.infer_peak_mib >= 0


def test_peers_and_inference_only_runs():
    results, _ = benchmark(["resnet20", "timm:resnet18"], train=False, **SMALL)
    assert results[1].params == sum(p.numel() for p in av.create_model("timm:resnet18", num_classes=10).parameters())
    assert results[1].train_images_per_s is None and results[1].train_peak_mib is None


def test_peak_memory_counts_tensors_made_during_the_call():
    kept = []
    mib = peak_memory_mib(lambda: kept.append(torch.empty(4 * 2 ** 20, dtype=torch.uint8)), torch.device("cpu"))
    assert mib == pytest.approx(4.0, abs=0.1)
    before = torch.ones(2 ** 20)  # alive before the call: not counted
    assert peak_memory_mib(lambda: before.add_(1), torch.device("cpu")) < 0.5


def test_peak_memory_counts_temporaries_freed_inside_a_region():
    def region():  # as compiled code: buffers made and dropped inside one profiled range, no operator's output
        with torch.profiler.record_function("region"):
            t = torch.empty(8 * 2 ** 20, dtype=torch.uint8)
            t.fill_(1)
            del t
            torch.empty(2 * 2 ** 20, dtype=torch.uint8).fill_(1)
    assert peak_memory_mib(region, torch.device("cpu")) == pytest.approx(8.0, abs=0.1)


def test_interleaved_medians_calls_each_function_in_turn():
    calls = []
    medians = interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4 and set(medians) == {"a", "b"}


@pytest.mark.parametrize("kwargs,match", [
    (dict(names=[]), "at least one"), (dict(names=["resnet20", "resnet20"]), "each model once"),
    (dict(names=["resnet20"], batch_size=0), "batch_size"), (dict(names=["resnet20"], threads=0), "threads"),
    (dict(names=["resnet20"], input_size=(16, 16)), "input_size"),
])
def test_bad_arguments_are_named(kwargs, match):
    names = kwargs.pop("names")
    with pytest.raises(ValueError, match=match):
        benchmark(names, **{**SMALL, **kwargs})


def test_cli_prints_the_table_and_writes_csv(tmp_path, capsys):
    out = tmp_path / "bench.csv"
    assert main(["benchmark", "resnet20", "resnet20_se", "--input-size", "3", "16", "16", "--batch-size", "2",
                 "--repeats", "1", "--num-classes", "10", "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    assert "GEMM peak" in text and "vs resnet20" in text and "resnet20_se" in text
    rows = list(csv.DictReader(out.open()))
    assert [r["name"] for r in rows] == ["resnet20", "resnet20_se"]
    assert rows[0]["input_size"] == "3x16x16" and float(rows[1]["train_images_per_s"]) > 0


def test_cli_unknown_model_is_one_line_and_exit_code_2(capsys):
    assert main(["benchmark", "resnet20", "no_such_model", "--input-size", "3", "16", "16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("attnvision benchmark: error:") and "no_such_model" in err[-1]


def test_optimize_adds_a_folded_row_after_each_of_our_models_with_the_eager_macs():
    results, _ = benchmark(["resnet20_cbam", "timm:resnet18"], optimize=True, train=False, **SMALL)
    assert [r.name for r in results] == ["resnet20_cbam", "resnet20_cbam (optimized)", "timm:resnet18"]
    assert (results[1].params, results[1].macs) == (results[0].params, results[0].macs)
    assert results[1].infer_images_per_s > 0


def test_cli_optimize_needs_no_train_and_writes_nothing_otherwise(tmp_path, capsys):
    out = tmp_path / "bench.csv"
    assert main(["benchmark", "resnet20", "--optimize", "--input-size", "3", "16", "16", "--csv", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["attnvision benchmark: error: optimize times inference only (the optimized copy has no BatchNorm "
                   "to train); pass train=False (--no-train)"]
    assert not out.exists()
