"""``group_matcher``: timm's parameter grouping, as its layer-wise learning-rate decay reads it. Every
parameter lands in exactly one group, the groups follow the forward pass (stem → blocks → head), and
timm's own optimizer factory gives the stem the most decayed rate and the classifier the full one."""
from __future__ import annotations

import pytest
import torch
from timm.models._manipulate import group_parameters
from timm.optim import create_optimizer_v2
from tiny_models import TINY, tiny_model

import attnvision as av


def _meta(name):
    with torch.device("meta"):
        return av.create_model(name, num_classes=7)


def _groups(model, coarse=False) -> dict[str, int]:
    """parameter name → group index, with the check that each parameter is in exactly one group."""
    groups = group_parameters(model, model.group_matcher(coarse=coarse))
    ids = {}
    for gid, names in groups.items():
        for n in names:
            assert n not in ids, f"{n} is in groups {ids[n]} and {gid}"
            ids[n] = gid
    assert set(ids) == {n for n, _ in model.named_parameters()}
    assert sorted(groups) == list(range(len(groups)))
    return ids


def _stages(model) -> int:
    return sum(1 for info in model.feature_info if info["module"] != "stem")


@pytest.mark.parametrize("name", av.list_models())
def test_every_parameter_is_in_one_group_from_stem_to_head(name):
    model = _meta(name)
    first, head = model.pretrained_cfg["first_conv"], model.pretrained_cfg["classifier"]
    for coarse in (False, True):
        ids = _groups(model, coarse)
        last = max(ids.values())
        assert ids[f"{first}.weight"] == 0
        assert ids[f"{head}.weight"] == ids[f"{head}.bias"] == last
        # the last stage's parameters come before the head's group
        stage = model.feature_info[-1]["module"]
        assert all(g < last for n, g in ids.items() if n.startswith(stage + "."))
        if coarse:  # the stem, one group per stage, the head
            assert last + 1 == _stages(model) + 2
    fine = len(set(_groups(model).values()))
    assert fine > _stages(model) + 2 or "vit" in name  # one group per block (a ViT stage is one block)


def _execution_order(model, x) -> dict[str, int]:
    """parameter name → the position of the first call of its module (or, for a table its module reads
    without calling a child, of the nearest called ancestor) in a forward pass."""
    calls, hooks = {}, []

    def called(name):
        def hook(*_):  # returns None: a pre-hook's return value would replace the input
            calls.setdefault(name, len(calls))
        return hook

    for mname, module in model.named_modules():
        hooks.append(module.register_forward_pre_hook(called(mname)))
    model(x)
    for h in hooks:
        h.remove()
    order = {}
    for name, _ in model.named_parameters():
        owner = name.rpartition(".")[0]
        while owner not in calls:
            owner = owner.rpartition(".")[0]
        order[name] = calls[owner]
    return order


# one model of every class and layout: BAM between stages, a pre-activation final norm, MobileNetV2's head
# convolution, the AA chain, the attention stem, the class token
ORDER_MODELS = ["resnet18", "resnet50_bam", "wide_resnet16_8_cbam", "mobilenet_v1_bam", "mobilenet_v2_bam",
                "van_b0", "coatnet_0", "sasa_resnet26", "ea_aa_resnet34", "ea_vit_tiny"]


@pytest.mark.parametrize("name", ORDER_MODELS)
def test_groups_follow_the_forward_pass(name):
    model = _meta(name).train()
    x = torch.zeros(2, *model.pretrained_cfg["input_size"], device="meta")
    order = _execution_order(model, x)
    for coarse in (False, True):
        ids = _groups(model, coarse)
        by_time = [ids[n] for n in sorted(order, key=order.get)]
        assert by_time == sorted(by_time), f"coarse={coarse}: a group is entered again after a later one"


@pytest.mark.parametrize("family", TINY)
def test_timms_layer_decay_scales_each_group_by_its_depth(family):
    model, _ = tiny_model(family)
    ids = _groups(model)
    n = max(ids.values()) + 1
    opt = create_optimizer_v2(model, "sgd", lr=1.0, weight_decay=0.0, layer_decay=0.7)
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    assert len(scale) == sum(1 for _ in model.parameters())
    for name, p in model.named_parameters():  # the stem 0.7^(n-1) ... the head 1
        assert scale[id(p)] == pytest.approx(0.7 ** (n - 1 - ids[name])), name
    assert scale[id(model.get_classifier().weight)] == 1.0
