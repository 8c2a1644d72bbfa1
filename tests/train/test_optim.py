"""Parameter groups of the optimiser: what ``no_weight_decay()`` names never decays, 1-D parameters never
decay, the rest does; layer-wise learning-rate decay scales each ``group_matcher`` group by its depth."""
from __future__ import annotations

import pytest
import torch
from timm.optim import create_optimizer_v2
from torch import nn

import attnvision as av
from attnvision.data import Synthetic
from attnvision.models._base import MATCH_PREV
from attnvision.train import TrainConfig, train
from attnvision.train.optim import OPTIMIZERS, create_optimizer, create_scheduler, layer_ids, param_groups

# one model of every family; AA, SASA, CoAtNet and the ViTs name 2-D tables (relative logits, position
# embeddings, the class token) in no_weight_decay(), which a rule on dimensions alone would decay
FAMILY_MODELS = ["resnet18_cbam", "preresnet110_se", "mobilenet_v1_eca", "mobilenet_v2_bam", "van_b0", "coatnet_0",
                 "sasa_resnet26", "aa_resnet34", "ea_vit_tiny"]
TABLES_2D = {"coatnet_0", "sasa_resnet26", "aa_resnet34", "ea_vit_tiny"}


def _meta(name):
    with torch.device("meta"):
        return av.create_model(name, num_classes=7)


def _decay_of(optimizer) -> dict[int, float]:
    """id(parameter) → its weight decay, checking that no parameter is in two groups."""
    decay = {}
    for g in optimizer.param_groups:
        for p in g["params"]:
            assert id(p) not in decay
            decay[id(p)] = g["weight_decay"]
    return decay


@pytest.mark.parametrize("layer_decay", [None, 0.7])
@pytest.mark.parametrize("opt", OPTIMIZERS)
@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_no_weight_decay_names_and_1d_parameters_never_decay(name, opt, layer_decay):
    model = _meta(name)
    skip = model.no_weight_decay()
    assert skip <= {n for n, _ in model.named_parameters()}
    if name in TABLES_2D:
        assert any(p.ndim >= 2 for n, p in model.named_parameters() if n in skip)
    decay = _decay_of(create_optimizer(model, opt, 0.1, weight_decay=0.05, layer_decay=layer_decay))
    params = dict(model.named_parameters())
    assert set(decay) == {id(p) for p in params.values()}
    for n, p in params.items():
        expected = 0.0 if n in skip or p.ndim <= 1 else 0.05
        assert decay[id(p)] == expected, n


class _Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, 4, 8))
        self.proj = nn.Linear(8, 8)

    def no_weight_decay(self):
        return {"pos"}


class _Wrapper(nn.Module):
    """A model that names a module prefix and a wildcard, around one that names its own parameter (as a
    detector holds a backbone)."""

    def __init__(self):
        super().__init__()
        self.backbone = _Embed()
        self.table = nn.Module()
        self.table.a = nn.Parameter(torch.zeros(3, 3))
        self.table.b = nn.Parameter(torch.zeros(3, 3))
        self.rel_h = nn.Parameter(torch.zeros(5, 2))
        self.head = nn.Linear(8, 2)

    def no_weight_decay(self):
        return {"table", "rel_*"}


def test_prefixes_wildcards_and_nested_modules_are_honoured():
    model = _Wrapper()
    groups = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in groups[0]["params"]) == ["backbone.proj.weight", "head.weight"]
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0


def test_frozen_parameters_are_left_out():
    model = _Wrapper()
    model.head.requires_grad_(False)
    kept = {id(p) for g in param_groups(model, 0.1) for p in g["params"]}
    assert kept == {id(p) for p in model.parameters() if p.requires_grad} and id(model.head.weight) not in kept


def test_a_bad_no_weight_decay_is_refused_naming_the_module():
    class Bad(nn.Linear):
        def no_weight_decay(self):
            return "weight"

    with pytest.raises(TypeError, match=r"Bad.no_weight_decay\(\) must return a set of parameter names"):
        param_groups(Bad(2, 2), 0.1)


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_layer_decay_scales_match_timms_and_run_from_the_stem_to_the_head(name):
    model = _meta(name)
    ids = layer_ids(model)
    last = max(ids.values())
    assert sorted(set(ids.values())) == list(range(last + 1))  # no gaps
    opt = create_optimizer(model, "adamw", 2.0, weight_decay=0.05, layer_decay=0.7)
    ours = {id(p): g for g in opt.param_groups for p in g["params"]}
    reference = create_optimizer_v2(model, "adamw", lr=2.0, weight_decay=0.05, layer_decay=0.7)
    theirs = {id(p): g["lr_scale"] for g in reference.param_groups for p in g["params"]}
    for n, p in model.named_parameters():
        g = ours[id(p)]
        assert g["lr_scale"] == pytest.approx(theirs[id(p)], rel=1e-12), n
        assert g["lr_scale"] == pytest.approx(0.7 ** (last - ids[n]), rel=1e-12) and g["lr"] == 2.0 * g["lr_scale"]
    assert ours[id(model.get_classifier().weight)]["lr_scale"] == 1.0
    assert ours[id(model.get_parameter(model.pretrained_cfg["first_conv"] + ".weight"))]["lr_scale"] == \
        pytest.approx(0.7 ** last)
    # the schedule keeps each group's scale
    sched = create_scheduler(opt, "cosine", total_steps=10)
    for _ in range(3):
        opt.step()
        sched.step()
    lrs = {g["lr"] / g["lr_scale"] for g in opt.param_groups}
    assert max(lrs) == pytest.approx(min(lrs), rel=1e-12) and 0 < max(lrs) < 2.0


def test_layer_decay_needs_a_group_matcher_and_a_valid_factor():
    with pytest.raises(ValueError, match="layer_decay needs a model with group_matcher.*Sequential has none"):
        create_optimizer(nn.Sequential(nn.Linear(2, 2)), "sgd", 0.1, weight_decay=0.0, layer_decay=0.7)
    with pytest.raises(ValueError, match=r"layer_decay must be in \(0, 1\]"):
        train(TrainConfig(model="resnet20", data="digits", epochs=1, layer_decay=1.5, device="cpu", progress=False))


class _Blocks(nn.Module):
    """stem → two blocks → head, grouped as timm's ViT is (MATCH_PREV joins the norm to the last block)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.blocks = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
        self.norm = nn.GroupNorm(1, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.norm(self.blocks(torch.relu(self.stem(x)))).mean((2, 3)))

    def group_matcher(self, coarse=False):
        return dict(stem=r"^stem\.", blocks=[(r"^blocks\.(\d+)\.", None), (r"^norm\.", (MATCH_PREV,))])


def test_a_layer_decay_run_logs_the_heads_rate(tmp_path):
    kw = dict(image_shape=(1, 6, 6), num_classes=3)
    model = _Blocks()
    assert layer_ids(model) == {"stem.weight": 0, "stem.bias": 0, "blocks.0.weight": 1, "blocks.0.bias": 1,
                                "blocks.1.weight": 2, "blocks.1.bias": 2, "norm.weight": 2, "norm.bias": 2,
                                "head.weight": 3, "head.bias": 3}
    stem_before = model.stem.weight.detach().clone()
    train(TrainConfig(model="blocks", data="synthetic", epochs=1, batch_size=8, lr=0.05, sched="constant",
                      layer_decay=0.5, progress=False, threads=1, device="cpu", out=str(tmp_path)),
          model=model, train_set=Synthetic("train", size=16, **kw), val_set=Synthetic("val", size=8, **kw))
    row = (tmp_path / "metrics.csv").read_text().splitlines()
    assert float(dict(zip(row[0].split(","), row[1].split(",")))["lr"]) == 0.05
    assert not torch.equal(stem_before, model.stem.weight)
