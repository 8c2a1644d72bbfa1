"""Sharing models: ``save_pretrained`` writes a repository in attnvision's format (``config.json``,
``model.safetensors``, a model card ``README.md``) and ``push_to_hub`` uploads one to the Hugging Face Hub.

Either takes a model built by :func:`~attnvision.create_model` or a run directory of ``attnvision train``
(its record rebuilds the model, attention attached by ``--attach`` and detection/segmentation heads
included; its ``best.safetensors``, else ``last.safetensors``, are the weights; its recipe and results go
into the card). ``create_model("hf-hub:ORG/NAME")`` and ``load_model("hf-hub:ORG/NAME")`` read such a
repository back; the format is described in :mod:`attnvision.weights.hub`.
"""
from __future__ import annotations

import json
import os
import tempfile

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .._version import __version__
from ..attach import AttachedAttention
from ..factory import create_model
from ..io import atomic_write_text, file_operation, read_json
from ..models._base import model_cfg
from ..registry import MODELS
from ..train import checkpoints as ckpt
from ..train.config import RUNTIME_KEYS
from ..train.rundir import model_metadata, read_record
from ..weights.hub import CONFIG_FILE, LIBRARY, WEIGHTS_FILE

CARD_FILE = "README.md"
DEFAULT_COMMIT_MESSAGE = "Upload an attnvision model"
_PIPELINE_TAGS = {"classification": "image-classification", "detection": "object-detection",
                  "segmentation": "image-segmentation"}
# what the card's results table shows of summary.json, in this order
_RESULTS = ("val_acc1", "val_acc5", "val_loss", "val_map", "val_map50", "val_map75", "val_miou", "val_pixel_acc",
            "best_epoch", "epochs_done", "params", "macs", "train_images_per_s", "infer_images_per_s")


def save_pretrained(model_or_run_dir, directory, *, repo_id: str | None = None) -> str:
    """Write ``config.json``, ``model.safetensors`` and the model card ``README.md`` into ``directory``.

    Args:
        model_or_run_dir: a model built by ``create_model`` (a registered architecture) or the directory of
            a run of ``attnvision train``.
        directory: the folder to write (created if needed; files already there are replaced, one by one,
            atomically).
        repo_id: ``ORG/NAME`` the card's example loads (default: a placeholder).

    Returns:
        ``directory``. ``load_model(directory)`` rebuilds the model with its weights; once uploaded,
        ``create_model("hf-hub:ORG/NAME")`` (or ``load_model``, for attached attention and dense tasks) does.
    """
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"save_pretrained: directory {directory!r} is a file, not a folder")
    if isinstance(model_or_run_dir, nn.Module):
        config, tensors, summary = _from_model(model_or_run_dir)
    elif isinstance(model_or_run_dir, (str, os.PathLike)):
        config, tensors, summary = _from_run(os.fspath(model_or_run_dir))
    else:
        raise TypeError(f"save_pretrained: expected a model or a run directory, got {type(model_or_run_dir).__name__}")
    record = {**config, "model": config["architecture"]}
    ckpt.save_weights(os.path.join(directory, WEIGHTS_FILE), tensors, metadata=model_metadata(record))
    atomic_write_text(os.path.join(directory, CONFIG_FILE), json.dumps(config, indent=1) + "\n")
    atomic_write_text(os.path.join(directory, CARD_FILE), model_card(config, summary, repo_id))
    return directory


def push_to_hub(model_or_run_dir, repo_id: str, *, private: bool = False, token: str | None = None,
                commit_message: str = DEFAULT_COMMIT_MESSAGE) -> str:
    """Upload what :func:`save_pretrained` writes to the Hugging Face Hub repository ``repo_id`` (``ORG/NAME``),
    created if needed (``private`` for a new one). ``token``: default, huggingface_hub's login
    (``huggingface-cli login`` / ``HF_TOKEN``). Returns the URL of the commit. Needs huggingface_hub
    (``pip install "attnvision[hub]"``)."""
    try:
        import huggingface_hub as hub
        from huggingface_hub.utils import HfHubHTTPError
    except ImportError:
        raise ImportError('push_to_hub: uploading to the Hugging Face Hub needs huggingface_hub: '
                          'pip install "attnvision[hub]"') from None
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"push_to_hub: repo_id must be 'ORG/NAME', got {repo_id!r}")
    with tempfile.TemporaryDirectory(prefix="attnvision-push-") as folder:
        save_pretrained(model_or_run_dir, folder, repo_id=repo_id)
        api = hub.HfApi(token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                       repo_type="model")
        except HfHubHTTPError as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if status in (401, 403):
                raise PermissionError(f"push_to_hub: the Hugging Face Hub refused to write {repo_id!r} "
                                      f"(HTTP {status}): "
                                      f"log in with huggingface-cli login, set HF_TOKEN or pass token=, with write "
                                      f"access to {repo_id.split('/')[0]!r}") from None
            raise OSError(f"push_to_hub: the Hugging Face Hub answered HTTP {status} for {repo_id!r}: "
                          f"{first}") from None
        except OSError as e:  # no network (requests' errors are OSErrors)
            if isinstance(e, PermissionError):
                raise
            raise OSError(f"push_to_hub: cannot reach the Hugging Face Hub to upload {repo_id!r} "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return str(getattr(commit, "commit_url", commit))


# -- what a model or a run says of itself ------------------------------------------------------------------

def _json_safe(value, where: str):
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise ValueError(f"save_pretrained: {where} cannot be written to config.json ({e})") from None


def _from_model(model: nn.Module) -> tuple[dict, dict, None]:
    name = type(model).__name__
    if hasattr(model, "removed_keys") and isinstance(getattr(model, "model", None), nn.Module):
        raise ValueError(f"save_pretrained: {name} is a feature extractor (features_only=True), which create_model "
                         f"rebuilds from the whole model: save the model it was made from")
    if any(isinstance(m, AttachedAttention) for m in model.modules()):
        raise ValueError(f"save_pretrained: {name} holds attention added by attach(), which its architecture name "
                         f"does not rebuild: save the run directory that trained it (attnvision train --attach)")
    found = getattr(model, "pretrained_cfg", None)
    cfg: dict = found if isinstance(found, dict) else {}
    arch = cfg.get("architecture")
    if isinstance(arch, str) and arch not in MODELS and arch.startswith("av_") and arch[3:] in MODELS:
        arch = arch[3:]  # built by timm.create_model("av_NAME") (attnvision.timm)
    if arch not in MODELS:
        raise ValueError(f"save_pretrained: {name} does not name a registered architecture (models built by "
                         f"create_model(NAME) do, in pretrained_cfg['architecture'], got {arch!r})")
    config = dict(library_name=LIBRARY, attnvision_version=__version__, architecture=arch,
                  model_kwargs=_json_safe(dict(getattr(model, "model_kwargs", {}) or {}), "the model kwargs"),
                  num_classes=int(getattr(model, "num_classes")), in_chans=int(cfg["input_size"][0]),
                  attach=None, attach_init="identity",
                  pretrained_cfg=_json_safe(dict(cfg, architecture=arch), "pretrained_cfg"))
    return config, model.state_dict(), None


def _from_run(run_dir: str) -> tuple[dict, dict, dict | None]:
    record = read_record(run_dir, "save_pretrained")
    if record["model"] is None:
        raise ValueError(f"save_pretrained: the run in {run_dir!r} trained a model passed to train() in Python, "
                         f"which its record cannot rebuild: build it, load its weights and save it with "
                         f"save_pretrained(model, ...) if it is a registered architecture")
    weights = next((os.path.join(run_dir, f) for f in (ckpt.BEST_WEIGHTS, ckpt.LAST_WEIGHTS)
                    if os.path.isfile(os.path.join(run_dir, f))), None)
    if weights is None:
        raise FileNotFoundError(f"save_pretrained: the run in {run_dir!r} holds no weights yet "
                                f"({ckpt.BEST_WEIGHTS} or {ckpt.LAST_WEIGHTS})")
    try:
        with file_operation("read", weights):
            tensors = load_file(weights)
    except SafetensorError as e:
        raise ValueError(f"save_pretrained: {weights!r} is not a valid safetensors file ({e})") from None
    summary_path = os.path.join(run_dir, "summary.json")
    summary = read_json(summary_path, "save_pretrained") if os.path.isfile(summary_path) else None
    run = dict(record, config={k: v for k, v in record["config"].items() if k not in RUNTIME_KEYS})
    config = dict(library_name=LIBRARY, attnvision_version=__version__, architecture=record["model"],
                  model_kwargs=record.get("model_kwargs") or {}, num_classes=record["num_classes"],
                  in_chans=record["in_chans"], attach=record.get("attach"),
                  attach_init=record.get("attach_init") or "identity", pretrained_cfg=record["pretrained_cfg"])
    for key in ("task", "backbone"):
        if key in record:
            config[key] = record[key]
    config.update(classes=record.get("classes"), weights=os.path.basename(weights), run=run)
    return config, tensors, summary


# -- the model card ----------------------------------------------------------------------------------------

def _architecture_cfg(name: str) -> dict:
    """The registered architecture's own ``pretrained_cfg`` (its paper, its license), built without weights."""
    try:
        with torch.device("meta"):
            return dict(model_cfg(create_model(name)))
    except (ValueError, TypeError):  # not a registered name (a detection head), or it needs arguments
        return {}


def _cell(value) -> str:
    if isinstance(value, float):
        value = f"{value:.4g}"
    elif isinstance(value, (list, tuple, dict)) or value is None:
        value = json.dumps(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _numbers(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _table(rows) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {_cell(k)} | {_cell(v)} |" for k, v in rows), ""]


def model_card(config: dict, summary: dict | None = None, repo_id: str | None = None) -> str:
    """The ``README.md`` of a repository: YAML front matter (library, license, tags, pipeline) and what the
    model is, where it comes from, how to load it and, for a run, its recipe and results."""
    task = config.get("task", "classification")
    arch = config["architecture"]
    backbone = config.get("backbone")
    arch_cfg = _architecture_cfg(backbone or arch)
    license_ = arch_cfg.get("license") or config["pretrained_cfg"].get("license") or "apache-2.0"
    tags = [LIBRARY, _PIPELINE_TAGS.get(task, task), arch] + ([backbone] if backbone else [])
    tags += [config["attach"]] if config.get("attach") else []
    repo = repo_id or "ORG/NAME"
    run = config.get("run")
    lines = ["---", f"library_name: {LIBRARY}", f"license: {license_}", "tags:", *(f"- {json.dumps(t)}" for t in tags)]
    if task in _PIPELINE_TAGS:
        lines.append(f"pipeline_tag: {_PIPELINE_TAGS[task]}")
    lines += ["---", "", f"# {repo_id or arch}", ""]
    what = f"`{arch}`" + (f" on a `{backbone}` backbone" if backbone else "")
    if config.get("attach"):
        what += f", with {config['attach']} attention attached (`attnvision train --attach`)"
    chans = config["in_chans"]
    lines += [f"An attnvision model: {what}, {config['num_classes']} classes, {chans} input channel"
              + ("s." if chans != 1 else "."), ""]
    builder = MODELS.get(backbone or arch) if (backbone or arch) in MODELS else None
    if builder is not None and builder.__doc__:
        lines += [builder.__doc__.strip().splitlines()[0], ""]
    paper = arch_cfg.get("paper") or config["pretrained_cfg"].get("paper")
    if paper:
        lines += [f"Paper: {paper}", ""]
    if config["model_kwargs"]:
        lines += [f"Model kwargs: `{json.dumps(config['model_kwargs'])}`", ""]
    pc = config["pretrained_cfg"]
    pre = [f"input {'×'.join(str(s) for s in pc['input_size'])}" if pc.get("input_size") else None,
           f"mean {_numbers(pc['mean'])}" if pc.get("mean") else None,
           f"std {_numbers(pc['std'])}" if pc.get("std") else None,
           f"crop_pct {pc['crop_pct']}" if pc.get("crop_pct") is not None else None]
    lines += ["Preprocessing: " + ", ".join(p for p in pre if p) + ".", ""]
    own = not (config.get("attach") or "task" in config)
    lines += ["## Use", "", "```python", "import attnvision", "",
              (f'model = attnvision.create_model("hf-hub:{repo}").eval()' if own else
               f'model = attnvision.load_model("hf-hub:{repo}").eval()'),
              "```", "", "`attnvision.load_model(\"hf-hub:" + repo + "\")` rebuilds it too, as it does a folder "
              "written by `attnvision.save_pretrained`.", ""]
    if run:
        recipe = [(k, v) for k, v in run["config"].items() if v is not None]
        lines += ["## Training", "", f"Trained by `attnvision train` on `{run.get('data')}`"
                  + (f" ({len(config['classes'])} classes)" if config.get("classes") else "")
                  + f"; the weights are the run's `{config.get('weights')}`. The recipe (the settings that "
                  "change what is trained; `run` in config.json holds the whole record):", "", *_table(recipe)]
    if summary:
        results = [(k, summary[k]) for k in _RESULTS if summary.get(k) is not None]
        results += [(k, v) for k, v in summary.items() if k.startswith("best_") and k != "best_epoch" and v is not None]
        lines += ["## Results", "", "From the run's `summary.json` (validation split of its data):", "",
                  *_table(results)]
    return "\n".join(lines).rstrip() + "\n"
