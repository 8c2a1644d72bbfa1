"""Fair comparisons: a grid of models × settings × seeds, trained with one recipe on one dataset.

``compare(models=["resnet20", "resnet20_cbam"], settings=parse_sets(["attn_kwargs.reduction=8,16"]))``
trains every combination (each in ``out/runs/<model>[__<settings>]/seed<k>``), skipping runs
that already finished and resuming those that were cut short, then writes:

- ``results.csv``: one row per run (``model, settings, seed, val_acc1, val_acc5, best_val_acc1,
  params, macs, train_images_per_s, infer_images_per_s, seconds`` and one column per
  registered run metric);
- ``results.md``: mean ± standard deviation over seeds of every metric, per model and setting, and
  for accuracy and ``cam_energy`` the paired difference to the baseline (:func:`group`);
- ``results.png``: accuracy against MACs and against parameters, with error bars;
- ``throughput.json``: training and inference images per second of each model, measured after
  all training, one model at a time (:func:`measure_throughput`).

The first model is the baseline. A setting applies only to the models it changes
(:func:`applicable`), so the baseline is not trained again under, say, every reduction ratio;
every other (model, settings) group is paired, seed by seed, with the baseline trained under the
same grid point, and its mean difference gets a 95% Student-t interval (:mod:`attnvision.train.stats`).

On data with object boxes (``cluttered-digits``) two more columns say where each model looks:
``cam_energy`` (the fraction of Grad-CAM mass inside the digit's box) and ``pointing_game`` (the
share of images whose CAM peak falls in the box), from :func:`attnvision.explain.explanation_scores`.

The package reads in three steps: :mod:`.plan` (the grid), :mod:`.run` (training, run metrics,
throughput) and :mod:`.report` (the results files). Where the runs train is a launcher's business
(:mod:`.launchers`: ``local``, or ``submitit`` for SLURM jobs); :mod:`.progress` follows them.
``DEFAULT`` is the README's first command:
ResNet-20 plain and with SE, ECA, BAM and CBAM on ``cluttered-digits``, 3 seeds,
``attn_kwargs.reduction=4`` (at 16, the 16-channel stage would leave one hidden unit in each
attention MLP), AdamW (4e-3, half an epoch of warm-up, label smoothing 0.1, batch 64) for 11 epochs
of fresh canvases. ``PRESETS["cifar"]`` is He et al.'s CIFAR protocol for ResNet-110 and its
attention variants.
"""
from .launchers import LAUNCHERS, Launcher, LocalLauncher, RunFailedError, SubmititLauncher, create_launcher
from .plan import DEFAULT, PRESETS, applicable, parse_sets, plan, run_config, settings_label
from .report import (
                     BASE_COLUMNS,
                     PAIRED_COLUMNS,
                     SPEED_COLUMNS,
                     Results,
                     TaskColumns,
                     delta_cell,
                     group,
                     mean_cell,
                     task_columns,
                     verdict,
                     write_results,
)
from .run import RUN_METRICS, RunContext, compare, measure_throughput, register_run_metric

__all__ = ["BASE_COLUMNS", "DEFAULT", "LAUNCHERS", "Launcher", "LocalLauncher", "PAIRED_COLUMNS", "PRESETS",
           "RUN_METRICS", "Results", "RunContext", "RunFailedError", "SPEED_COLUMNS", "SubmititLauncher", "TaskColumns",
           "applicable", "compare", "create_launcher", "delta_cell", "group", "mean_cell", "measure_throughput",
           "parse_sets", "plan", "register_run_metric", "run_config", "settings_label", "task_columns", "verdict",
           "write_results"]
