"""attach / detach: attention retrofitted into torchvision, timm, attnvision and user CNNs."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn
from torchvision.models.convnext import CNBlock, CNBlockConfig, ConvNeXt
from torchvision.models.efficientnet import EfficientNet, MBConv, _efficientnet_conf
from torchvision.models.mobilenetv2 import InvertedResidual as InvertedResidualV2
from torchvision.models.mobilenetv2 import MobileNetV2
from torchvision.models.mobilenetv3 import InvertedResidual as InvertedResidualV3
from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf
from torchvision.models.regnet import BlockParams, RegNet, ResBottleneckBlock
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

import attnvision as av
from attnvision import attach, detach
from attnvision.attach import AttachedAttention

KINDS = ("se", "eca", "bam", "cbam")
PROBE = (1, 3, 64, 64)

# Each torchvision family's own class at a few blocks per stage, random weights. The named variants
# (resnet18 ... convnext_tiny) are counted on the meta device in test_parameter_increment_of_named_variants.
FAMILIES = {
    "resnet": lambda: ResNet(BasicBlock, [1, 1, 1, 1]),
    "resnext": lambda: ResNet(Bottleneck, [1, 1, 1, 1], groups=8, width_per_group=4),
    "wide_resnet": lambda: ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=128),
    "mobilenet_v2": lambda: MobileNetV2(inverted_residual_setting=[[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2]]),
    "mobilenet_v3": lambda: MobileNetV3(_mobilenet_v3_conf("mobilenet_v3_small")[0][:5], last_channel=256),
    "efficientnet": lambda: EfficientNet(_efficientnet_conf("efficientnet_b0", width_mult=1.0, depth_mult=1.0)[0][:3],
                                         dropout=0.2),
    "regnet_x": lambda: RegNet(BlockParams([1, 2, 2], [32, 64, 128], [16, 16, 16], [1.0] * 3, [2, 2, 2])),
    "regnet_y": lambda: RegNet(BlockParams([1, 2, 2], [32, 64, 128], [16, 16, 16], [1.0] * 3, [2, 2, 2], 0.25)),
    "convnext": lambda: ConvNeXt([CNBlockConfig(32, 64, 1), CNBlockConfig(64, 128, 2), CNBlockConfig(128, None, 1)]),
}
NAMED = ["resnet18", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
         "regnet_x_400mf", "regnet_y_400mf", "convnext_tiny"]


def pretrained_like(model: nn.Module) -> nn.Module:
    """Random normalisation statistics and affine weights, as a trained network has."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.1, generator=g)
    return model.eval()


_BUILT: dict[str, nn.Module] = {}


def build(family: str) -> nn.Module:
    """A fresh copy of the family's model (built once per session)."""
    if family not in _BUILT:
        torch.manual_seed(0)
        _BUILT[family] = pretrained_like(FAMILIES[family]())
    return copy.deepcopy(_BUILT[family])


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def attn_params(kind: str, channels: int) -> int:
    with torch.device("meta"):
        return n_params(av.create_attn(kind, channels))


# -- the expected sites, read from each torchvision family's own block attributes ----------------

def _dw_stride(block: nn.Module) -> int:
    return next(c for c in block.modules() if isinstance(c, nn.Conv2d) and c.groups > 1).stride[0]


def torchvision_blocks(model: nn.Module) -> list[tuple[bool, int, int]]:
    """(has a residual addition, stride, output channels) of every block, in order."""
    rows = []
    for m in model.modules():
        if isinstance(m, (BasicBlock, Bottleneck)):
            rows.append((True, m.stride, (m.bn3 if isinstance(m, Bottleneck) else m.bn2).num_features))
        elif isinstance(m, InvertedResidualV2):
            rows.append((m.use_res_connect, m.stride, m.out_channels))
        elif isinstance(m, (InvertedResidualV3, MBConv)):
            rows.append((m.use_res_connect, _dw_stride(m), m.out_channels))
        elif isinstance(m, ResBottleneckBlock):
            rows.append((True, m.f.b[0].stride[0], m.f.c[1].num_features))
        elif isinstance(m, CNBlock):
            rows.append((True, 1, m.block[0].in_channels))
        elif isinstance(model, ConvNeXt) and isinstance(m, nn.Conv2d) and m.stride[0] > 1:  # stem, downsamplings
            rows.append((False, m.stride[0], m.out_channels))
    return rows


def expected_widths(rows, placement: str) -> list[int]:
    """Channels of the residual branch ends ("block"), or of the last residual block before each
    spatial downsampling ("stage")."""
    reduction, residual = 1, []
    for has_residual, stride, channels in rows:
        reduction *= stride
        if has_residual:
            residual.append((reduction, channels))
    if placement == "block":
        return [c for _, c in residual]
    return [c for (r, c), (r_next, _) in zip(residual, residual[1:]) if r_next > r]


def expected_increment(model, kind, init) -> int:
    widths = expected_widths(torchvision_blocks(model), "stage" if kind == "bam" else "block")
    return sum(attn_params(kind, c) + (init == "identity") for c in widths)


def forward(model, x):
    with torch.no_grad():
        return model(x)


# -- torchvision families ------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", KINDS)
def test_identity_attach_keeps_outputs_and_adds_expected_parameters(family, kind):
    model = build(family)
    x = torch.randn(2, 3, 64, 64)
    before, n_before = forward(model, x), n_params(model)
    widths = expected_widths(torchvision_blocks(model), "stage" if kind == "bam" else "block")
    increment = expected_increment(model, kind, "identity")
    paths = attach(model, kind, input_size=PROBE)
    assert len(paths) == len(widths)
    assert n_params(model) - n_before == increment
    assert all(isinstance(model.get_submodule(p), nn.Module) for p in paths)
    torch.testing.assert_close(forward(model, x), before, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NAMED)
def test_parameter_increment_of_named_variants(name):
    with torch.device("cpu" if name.startswith("regnet") else "meta"):  # RegNet computes its widths with tensors
        model = tvm.get_model(name).to("meta")
    n_before, increment = n_params(model), expected_increment(model, "cbam", "default")
    attach(model, "cbam", init="default", input_size=PROBE)
    assert n_params(model) - n_before == increment


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_attached_modules(family):
    model = build(family).train()
    paths = attach(model, "cbam", input_size=PROBE)
    x = torch.randn(2, 3, 64, 64)
    model(x).square().mean().backward()
    wrappers = [model.get_submodule(p.rsplit(".", 1)[0]) for p in paths]
    assert all(w.gate.grad is not None and w.gate.grad.abs() > 0 for w in wrappers)
    model.zero_grad()
    with torch.no_grad():
        for w in wrappers:
            w.gate.fill_(1.0)
    model(x).square().mean().backward()
    for p in paths:
        grads = [q.grad for q in model.get_submodule(p).parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, p


@pytest.mark.parametrize("family", FAMILIES)
def test_state_dict_round_trip_through_a_rebuilt_model(family):
    source = build(family)
    attach(source, "cbam", input_size=PROBE)
    with torch.no_grad():
        for name, p in source.named_parameters():
            if ".attn." in name or name.endswith("gate"):
                p.normal_(0, 0.5)
    target = build(family)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(1.0)
    attach(target, "cbam", input_size=PROBE)
    target.load_state_dict(source.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(forward(target, x), forward(source, x), rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_detach_restores_modules_outputs_and_parameter_count(family):
    model = build(family)
    x = torch.randn(2, 3, 64, 64)
    originals = dict(model.named_modules())
    before, n_before = forward(model, x), n_params(model)
    paths = attach(model, "bam", init="default", input_size=PROBE)
    assert not torch.equal(forward(model, x), before)
    assert detach(model) == paths
    assert dict(model.named_modules()) == originals
    assert n_params(model) == n_before
    torch.testing.assert_close(forward(model, x), before, rtol=0, atol=0)


def test_worked_example_resnet50_cbam_matches_the_papers_count():
    with torch.device("meta"):
        model = tvm.resnet50()
    assert n_params(model) == 25_557_032
    paths = attach(model, "cbam", init="default")
    assert n_params(model) == 28_089_624 == av.profile("resnet50_cbam").params
    assert paths[0] == "layer1.0.bn3.attn" and len(paths) == 16


def test_profile_reports_the_added_parameters_and_macs():
    with torch.device("meta"):
        model = tvm.resnet50()
    before = av.profile(model)
    paths = attach(model, "cbam", init="default")
    after = av.profile(model)
    inputs = {}
    for p in paths:
        model.get_submodule(p).register_forward_pre_hook(lambda m, a, p=p: inputs.update({p: a[0].shape}))
    av.profile(model)
    added = [av.profile(model.get_submodule(p), tuple(inputs[p])) for p in paths]
    assert after.params - before.params == sum(a.params for a in added)
    assert after.macs - before.macs == sum(a.macs for a in added) > 0


def test_loading_weights_saved_before_attach():
    original = build("resnet")
    x = torch.randn(2, 3, 64, 64)
    model = FAMILIES["resnet"]()
    paths = attach(model, "se", input_size=PROBE)
    report = model.load_state_dict(original.state_dict(), strict=False)
    added = {k for k in model.state_dict() if ".attn." in k or k.endswith(".gate")}
    assert set(report.missing_keys) == added and len(added) == 4 * len(paths) + len(paths)
    assert report.unexpected_keys == []
    torch.testing.assert_close(forward(model.eval(), x), forward(original, x), rtol=0, atol=1e-6)


def test_detection_backbone_gets_attention_in_its_residual_blocks_not_in_the_fpn():
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    with torch.device("meta"):
        backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    paths = attach(backbone, "cbam", init="default", input_size=(1, 3, 128, 128))
    assert paths == [f"body.layer{i}.{j}.bn2.attn" for i in range(1, 5) for j in range(2)]


# -- timm and attnvision models ---------------------------------------------------------------

def test_timm_resnet_branch_ends_and_identity():
    import timm

    model = pretrained_like(timm.create_model("resnet26", pretrained=False))
    x = torch.randn(2, 3, 64, 64)
    before = forward(model, x)
    paths = attach(model, "cbam", input_size=PROBE)
    assert paths == [f"layer{i}.{j}.bn3.attn" for i in range(1, 5) for j in range(2)]
    torch.testing.assert_close(forward(model, x), before, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name, kind", [("resnet18", "se"), ("resnet18", "bam"), ("resnet18", "cbam"),
                                        ("resnet20", "cbam"), ("wide_resnet28_10", "cbam"), ("resnet50", "bam")])
def test_registry_model_plus_attach_counts_as_its_attention_variant(name, kind):
    with torch.device("meta"):
        model = av.create_model(name)
    attach(model, kind, init="default")
    assert n_params(model) == av.profile(f"{name}_{kind}").params


def test_mobilenet_v1_without_residuals_gets_bam_before_each_downsampling():
    with torch.device("meta"):
        model = av.create_model("mobilenet_v1")
    assert attach(model, "bam", init="default") == [f"stages.{i}.attn" for i in range(4)]
    assert n_params(model) == av.profile("mobilenet_v1_bam").params


def test_explicit_paths_reproduce_mobilenet_v1_cbam():
    with torch.device("meta"):
        model = av.create_model("mobilenet_v1")
    where = [f"stages.{i}.{j}.pw" for i, stage in enumerate(model.stages) for j in range(len(stage))]
    assert attach(model, "cbam", where=where, init="default") == [f"{w}.attn" for w in where]
    assert n_params(model) == av.profile("mobilenet_v1_cbam").params


def test_features_only_model_keeps_its_maps():
    model = pretrained_like(av.create_model("resnet18", features_only=True))
    x = torch.randn(2, 3, 64, 64)
    before = forward(model, x)
    paths = attach(model, "cbam", input_size=PROBE)
    assert paths[0] == "model.layer1.0.bn2.attn"
    after = forward(model, x)
    assert len(after) == len(before) == 4
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


# -- a user's own network ---------------------------------------------------------------------

class UserBlock(nn.Module):
    """A residual block written the user's way: functional activation, projection when needed."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.proj = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        shortcut = x if self.proj is None else self.proj(x)
        return F.relu(self.body(x) + shortcut)


class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU())
        self.blocks = nn.ModuleList([UserBlock(16, 32), UserBlock(32, 32), UserBlock(32, 64, 2), UserBlock(64, 64)])
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean((2, 3)))


def test_user_residual_cnn_block_and_stage_placement():
    model = pretrained_like(UserNet())
    x = torch.randn(2, 3, 32, 32)
    before = forward(model, x)
    assert attach(model, "cbam", input_size=(1, 3, 32, 32)) == [f"blocks.{i}.body.4.attn" for i in range(4)]
    torch.testing.assert_close(forward(model, x), before, rtol=0, atol=1e-6)
    detach(model)
    assert attach(model, "bam", input_size=(1, 3, 32, 32)) == ["blocks.1.attn"]
    assert attach(model, "bam", remove=True) == ["blocks.1.attn"]


def test_torch_compile_traces_attached_model_in_one_graph():
    model = pretrained_like(UserNet())
    attach(model, "cbam", input_size=(1, 3, 32, 32))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, AttachedAttention):
                m.gate.fill_(0.5)
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(forward(compiled, x), forward(model, x))


def test_ddp_wraps_attached_model_and_reduces_every_gradient(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        model = UserNet()
        attach(model, "cbam", input_size=(1, 3, 32, 32))
        ddp = nn.parallel.DistributedDataParallel(model)
        ddp(torch.randn(2, 3, 32, 32)).sum().backward()
        assert all(p.grad is not None for p in model.parameters())
        assert all(m.gate.grad.abs() > 0 for m in model.modules() if isinstance(m, AttachedAttention))
    finally:
        dist.destroy_process_group()


# -- what attach refuses ------------------------------------------------------------------------

class PlainCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class CatBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(16, 8, 3, 1, 1)
        self.b = nn.Conv2d(16, 8, 3, 1, 1)

    def forward(self, x):
        return x + torch.cat([self.a(x), self.b(x)], 1)


def test_network_without_residual_blocks_names_what_it_found():
    with pytest.raises(ValueError, match=r"found no residual block in PlainCNN.*2 spatial downsamplings.*where="):
        attach(PlainCNN(), "cbam", input_size=(1, 3, 32, 32))
    assert attach(PlainCNN(), "cbam", where="stage", input_size=(1, 3, 32, 32)) == ["features.1.attn",
                                                                                    "features.4.attn"]


def test_branch_ending_outside_a_module_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), CatBranch())
    with pytest.raises(ValueError, match=r"operation 'cat' in '1'.*where=\[module paths\]"):
        attach(model, "se", input_size=(1, 3, 16, 16))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(kind="sse"), ValueError, "unknown name 'sse'"),
    (dict(kind="se", init="zeros"), ValueError, "init must be one of"),
    (dict(kind="se", where="blocks"), ValueError, "where must be one of"),
    (dict(kind="se", where=["layer9"]), ValueError, "unknown name 'layer9'"),
    (dict(kind="se", where=["layer1.0.relu"]), ValueError, "ran 2 times"),
    (dict(kind="se", where=["fc"]), ValueError, r"must return one \(B, C, H, W\) map.*\(1, 1000\)"),
    (dict(kind="cbam", where=["layer1.0.bn1"], reduction=128), ValueError, "'layer1.0.bn1' \\(64 channels\\)"),
    (dict(kind="se", input_size=(3, 64, 64)), ValueError, "input_size must be 4 positive integers"),
    (dict(kind="se", remove=True, reduction=8), ValueError, "remove=True takes only the model and the kind"),
    (dict(kind="sse", remove=True), ValueError, "detach \\(kind\\): unknown name 'sse'"),
])
def test_bad_arguments_are_refused(kwargs, error, match):
    with torch.device("meta"):
        model = tvm.resnet18()
    with pytest.raises(error, match=match):
        attach(model, **kwargs)


def test_attaching_twice_or_to_a_wrapped_model_is_refused():
    with torch.device("meta"):
        model = tvm.resnet18()
    attach(model, "se", input_size=PROBE)
    with pytest.raises(ValueError, match="already has attached attention"):
        attach(model, "cbam", input_size=PROBE)
    with pytest.raises(ValueError, match="before torch.compile"):
        attach(torch.compile(model), "se")
