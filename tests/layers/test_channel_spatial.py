"""SE, ECA, BAM and CBAM: equations, defaults, the authors' fixtures, switches and errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import attnvision as av
from attnvision.layers import BAM, CBAM, ECA, SE, eca_kernel_size
from attnvision.layers.cbam import _pool_map

LAYERS = {"se": SE, "eca": ECA, "bam": BAM, "cbam": CBAM}


def _randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    return module.eval()


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("shape", [(2, 32, 7, 7), (2, 48, 5, 9), (3, 16, 1, 1)])
def test_keeps_shape_and_backpropagates_on_any_map(kind, shape):
    layer = LAYERS[kind](shape[1], reduction=4) if kind != "eca" else ECA(shape[1])
    x = torch.randn(shape, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in layer.parameters())


def test_se_matches_its_equation():
    layer = _randomize(SE(32, reduction=4))
    x = torch.randn(2, 32, 5, 6)
    z = x.mean((2, 3))
    s = torch.sigmoid(F.linear(F.relu(F.linear(z, layer.fc1.weight, layer.fc1.bias)), layer.fc2.weight, layer.fc2.bias))
    torch.testing.assert_close(layer(x), x * s[:, :, None, None])


def test_se_defaults_to_reduction_16():
    layer = SE(64)
    assert layer.fc1.out_features == 4
    assert sum(p.numel() for p in layer.parameters()) == 2 * 64 * 4 + 4 + 64


@pytest.mark.parametrize("channels", [16, 64, 128, 256, 512, 1000, 2048])
def test_eca_kernel_is_the_nearest_odd_to_psi(channels):
    t = (math.log2(channels) + 1) / 2
    k = eca_kernel_size(channels)
    assert k % 2 == 1
    nearest = [o for o in range(1, 20, 2) if abs(o - t) == min(abs(q - t) for q in range(1, 20, 2))]
    assert k in nearest and (len(nearest) == 1 or k == max(nearest))
    assert ECA(channels).k_size == k


def test_eca_matches_a_conv_across_channels_without_bias():
    layer = _randomize(ECA(64, k_size=5))
    assert [n for n, _ in layer.named_parameters()] == ["conv.weight"]
    x = torch.randn(2, 64, 4, 4)
    y = x.mean((2, 3))
    w = layer.conv.weight.view(-1)
    padded = F.pad(y, (2, 2))
    conv = torch.stack([(padded[:, c:c + 5] * w).sum(1) for c in range(64)], 1)
    torch.testing.assert_close(layer(x), x * torch.sigmoid(conv)[:, :, None, None])


def _bam_branches_by_hand(layer, x):
    """The released code's inner layers, written out: (channel MLP output (B, C), spatial 1×1 output (B, 1, H, W))."""
    c, s = layer.channel, layer.spatial.body

    def bn(v, m):
        shape = (1, -1) + (1,) * (v.dim() - 2)
        return ((v - m.running_mean.view(shape)) / torch.sqrt(m.running_var.view(shape) + m.eps)
                * m.weight.view(shape) + m.bias.view(shape))

    mlp = F.linear(F.relu(bn(F.linear(x.mean((2, 3)), c.fc1.weight, c.fc1.bias), c.bn)), c.fc2.weight, c.fc2.bias)
    h = F.relu(bn(F.conv2d(x, s[0].weight, s[0].bias), s[1]))
    for i in (3, 6):
        h = F.relu(bn(F.conv2d(h, s[i].weight, s[i].bias, padding=4, dilation=4), s[i + 1]))
    return mlp, F.conv2d(h, s[9].weight, s[9].bias), bn


def test_bam_sum_is_the_papers_equations_1_to_3_with_a_bn_on_each_branch():
    x = torch.randn(2, 32, 6, 10, dtype=torch.float64)
    layer = _randomize(BAM(32, reduction=4)).double()
    mlp, conv, bn = _bam_branches_by_hand(layer, x)
    mc = bn(mlp, layer.channel.out_bn)[:, :, None, None]   # eq. 2: BN(MLP(AvgPool(F)))
    ms = bn(conv, layer.spatial.out_bn)                     # eq. 3: BN(f3(f2(f1(f0(F)))))
    torch.testing.assert_close(layer(x), x + x * torch.sigmoid(mc + ms), rtol=0, atol=1e-12)  # eq. 1
    assert isinstance(layer.channel.out_bn, torch.nn.BatchNorm1d) and layer.channel.out_bn.num_features == 32
    assert isinstance(layer.spatial.out_bn, torch.nn.BatchNorm2d) and layer.spatial.out_bn.num_features == 1


def test_bam_product_is_the_authors_code_without_the_papers_bns():
    x = torch.randn(2, 32, 6, 10, dtype=torch.float64)
    layer = _randomize(BAM(32, reduction=4, combine="product")).double()
    mlp, conv, _ = _bam_branches_by_hand(layer, x)
    torch.testing.assert_close(layer(x), x * (1 + torch.sigmoid(mlp[:, :, None, None] * conv)), rtol=0, atol=1e-12)
    n_sum = sum(p.numel() for p in BAM(32, reduction=4).parameters())
    assert n_sum - sum(p.numel() for p in layer.parameters()) == 2 * 32 + 2


def test_bam_spatial_branch_is_dilated_and_keeps_size():
    layer = BAM(64)
    dilated = [m for m in layer.spatial.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(dilated) == 2 and all(m.dilation == (4, 4) for m in dilated)
    assert layer.spatial(torch.randn(2, 64, 7, 11)).shape == (2, 1, 7, 11)


def test_cbam_matches_its_equations_channel_first():
    layer = _randomize(CBAM(32, reduction=4))
    x = torch.randn(2, 32, 6, 7)

    def mlp(v):
        return layer.channel.fc2(F.relu(layer.channel.fc1(v)))

    mc = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))
    f1 = x * mc[:, :, None, None]
    pooled = torch.cat([f1.amax(1, keepdim=True), f1.mean(1, keepdim=True)], 1)
    ms = torch.sigmoid(layer.spatial.bn(F.conv2d(pooled, layer.spatial.conv.weight, padding=3)))
    torch.testing.assert_close(layer(x), f1 * ms)


def test_cbam_orders_and_gate_switches_change_the_result():
    x = torch.randn(2, 16, 5, 5)
    base = _randomize(CBAM(16, reduction=4))
    outs = {}
    for order in ("channel_first", "spatial_first", "parallel"):
        layer = _randomize(CBAM(16, reduction=4, order=order))
        outs[order] = layer(x)
    assert not torch.allclose(outs["channel_first"], outs["spatial_first"])
    assert not torch.allclose(outs["channel_first"], outs["parallel"])
    mc = torch.sigmoid(base.channel(x))[:, :, None, None]
    ms = torch.sigmoid(base.spatial(x))
    torch.testing.assert_close(outs["parallel"], x * mc * ms)
    only_channel = _randomize(CBAM(16, reduction=4, spatial=False))
    torch.testing.assert_close(only_channel(x), x * torch.sigmoid(only_channel.channel(x))[:, :, None, None])


@pytest.mark.parametrize("pool_types", [("avg",), ("max",), ("avg", "max")])
def test_cbam_pool_types_change_only_the_channel_gate_spatial_input_stays_max_mean(pool_types):
    layer = _randomize(CBAM(16, reduction=4, pool_types=pool_types))
    assert layer.channel.pool_types == pool_types and layer.spatial.conv.in_channels == 2
    x = torch.randn(2, 16, 5, 6)
    pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)  # the authors' ChannelPool
    expected = layer.spatial.bn(F.conv2d(pooled, layer.spatial.conv.weight, padding=3))
    torch.testing.assert_close(layer.spatial(x), expected)


def _naive_pool(x, kind):
    """Each channel's H×W map pooled by the module docstring's formula, one map at a time in float64."""
    out = torch.empty(x.shape[:2], dtype=torch.float64)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            v = [float(t) for t in x[b, c].flatten()]
            out[b, c] = {"avg": lambda: sum(v) / len(v), "max": lambda: max(v),
                         "lp": lambda: math.sqrt(sum(t * t for t in v)),
                         "lse": lambda: math.log(sum(math.exp(t) for t in v))}[kind]()
    return out


@pytest.mark.parametrize("pool_types", [("lp",), ("lse",), ("lse", "avg"), ("avg", "max", "lp", "lse")])
def test_cbam_lp_and_lse_channel_pools_match_a_naive_computation(pool_types):
    layer = _randomize(CBAM(16, reduction=4, pool_types=pool_types))
    assert layer.channel.pool_types == pool_types and layer.spatial.conv.in_channels == 2
    x = torch.randn(2, 16, 5, 6)
    gate = layer.channel
    expected = sum(gate.fc2(torch.relu(gate.fc1(_naive_pool(x, p).float()))) for p in pool_types)  # eq. 2's sum
    torch.testing.assert_close(gate(x), expected, rtol=1e-5, atol=1e-5)
    out = layer(x)
    ms_in = layer._gate(x, torch.sigmoid(expected)[:, :, None, None])
    torch.testing.assert_close(out, ms_in * torch.sigmoid(layer.spatial(ms_in)), rtol=1e-5, atol=1e-5)


def test_cbam_lp_and_lse_pools_are_the_authors_calls_and_stay_finite():
    x = torch.randn(2, 8, 7, 5, dtype=torch.float64)
    # the authors' ChannelGate: F.lp_pool2d(x, 2, (H, W)) and logsumexp_2d (max + log Σ exp(x − max))
    torch.testing.assert_close(_pool_map(x, "lp"), F.lp_pool2d(x, 2, (7, 5)).flatten(1))
    flat = x.flatten(2)
    m = flat.amax(-1, keepdim=True)
    torch.testing.assert_close(_pool_map(x, "lse"), (m + (flat - m).exp().sum(-1, keepdim=True).log()).squeeze(-1))
    torch.testing.assert_close(_pool_map(x + 1000.0, "lse"), _pool_map(x, "lse") + 1000.0)  # no overflow
    zero = torch.zeros(1, 16, 4, 4, requires_grad=True)
    layer = CBAM(16, reduction=4, pool_types=("lp", "lse"))
    layer(zero).sum().backward()
    assert torch.isfinite(zero.grad).all() and all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_cbam_spatial_pool_types_ablate_the_spatial_pooling():
    layer = _randomize(CBAM(16, reduction=4, spatial_pool_types=("avg",)))
    assert layer.spatial.conv.in_channels == 1 and layer.channel.pool_types == ("avg", "max")
    x = torch.randn(2, 16, 5, 6)
    expected = layer.spatial.bn(F.conv2d(x.mean(1, keepdim=True), layer.spatial.conv.weight, padding=3))
    torch.testing.assert_close(layer.spatial(x), expected)
    with pytest.raises(ValueError, match="CBAM: spatial_pool_types must be a non-empty subset"):
        CBAM(16, spatial_pool_types=("lse",))


def test_cbam_spatial_reduce_conv_replaces_only_the_channel_pooling_by_a_1x1_conv():
    pooled, conv = _randomize(CBAM(16, reduction=4)), _randomize(CBAM(16, reduction=4, spatial_reduce="conv"))
    assert conv.spatial.reduce.weight.shape == (1, 16, 1, 1) and conv.spatial.reduce.bias is None
    assert conv.spatial.conv.in_channels == 1 and conv.channel.pool_types == pooled.channel.pool_types
    n_pooled, n_conv = (sum(p.numel() for p in m.parameters()) for m in (pooled, conv))
    assert n_conv - n_pooled == 16 - 7 * 7  # + the 1×1 conv, − the k×k conv's second input channel
    x = torch.randn(2, 16, 5, 6)
    reduced = F.conv2d(x, conv.spatial.reduce.weight)  # (B, 1, H, W)
    expected = conv.spatial.bn(F.conv2d(reduced, conv.spatial.conv.weight, padding=3))
    torch.testing.assert_close(conv.spatial(x), expected)
    with torch.no_grad():  # a 1×1 conv of constant weights 1/C is the mean pooling
        conv.spatial.reduce.weight.fill_(1 / 16)
    mean_only = _randomize(CBAM(16, reduction=4, spatial_pool_types=("avg",)))
    mean_only.load_state_dict({k: v for k, v in conv.state_dict().items() if k != "spatial.reduce.weight"})
    torch.testing.assert_close(conv(x), mean_only(x))
    with pytest.raises(ValueError, match="CBAM: spatial_reduce='conv' replaces the spatial pooling"):
        CBAM(16, spatial_reduce="conv", spatial_pool_types=("avg",))
    with pytest.raises(ValueError, match="CBAM: spatial_reduce must be one of"):
        CBAM(16, spatial_reduce="1x1")


def test_cbam_spatial_reduce_reaches_the_backbones_through_attn_kwargs():
    with torch.device("meta"):
        base = av.create_model("resnet18_cbam")
        conv = av.create_model("resnet18_cbam", attn_kwargs=dict(spatial_reduce="conv"))
    gates = [m for m in conv.modules() if isinstance(m, CBAM)]
    assert gates and all(g.spatial.reduce is not None for g in gates)
    added = sum(g.channels - 7 * 7 for g in gates)
    assert sum(p.numel() for p in conv.parameters()) - sum(p.numel() for p in base.parameters()) == added


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_keep_attention_stores_maps_only_when_asked(kind):
    layer = LAYERS[kind](16, reduction=4) if kind != "eca" else ECA(16)
    layer.eval()
    x = torch.randn(2, 16, 6, 6)
    layer(x)
    assert layer.last_attention is None
    layer.keep_attention = True
    layer(x)
    maps = layer.last_attention
    if kind == "cbam":
        assert maps["channel"].shape == (2, 16) and maps["spatial"].shape == (2, 1, 6, 6)
    elif kind == "bam":
        assert maps.shape == (2, 16, 6, 6) and ((maps > 0) & (maps < 1)).all()
    else:
        assert maps.shape == (2, 16)


@pytest.mark.parametrize("name,kwargs", [("cbam_module.pt", {}), ("bam_module.pt", {"combine": "product"}),
                                         ("eca_layer_k3.pt", {"k_size": 3}), ("eca_layer_k5.pt", {"k_size": 5})])
def test_layers_reproduce_the_authors_modules(load_reference, name, kwargs):
    ref = load_reference(name)
    layer = {"cbam": CBAM, "bam": BAM, "eca": ECA}[name.split("_")[0]](64, **kwargs)
    av.load_checkpoint(layer.double(), ref["state_dict"], source="official")
    with torch.no_grad():
        out64 = layer.eval()(ref["input"].double())
        out32 = layer.float()(ref["input"].float())
    torch.testing.assert_close(out64, ref["output_fp64"].double(), rtol=0, atol=1e-9)
    torch.testing.assert_close(out32, ref["output_fp32"], rtol=1e-4, atol=5e-5)


def test_official_bam_module_refuses_the_sum_combination(load_reference):
    with pytest.raises(ValueError, match=r'combine="product"'):
        av.load_checkpoint(BAM(64), load_reference("bam_module.pt")["state_dict"], source="official")


@pytest.mark.parametrize("call,match", [
    (lambda: SE(8, reduction=16), r"SE: reduction=16 is larger than channels=8"),
    (lambda: CBAM(0), r"CBAM: channels must be a positive integer"),
    (lambda: ECA(64, k_size=4), r"ECA: k_size must be odd"),
    (lambda: BAM(64, combine="mean"), r"BAM: combine must be one of"),
    (lambda: CBAM(64, order="sideways"), r"CBAM: order must be one of"),
    (lambda: CBAM(64, pool_types=("avg", "median")),
     r"CBAM: pool_types must be a non-empty subset of \('avg', 'max', 'lp', 'lse'\), got \('avg', 'median'\) "
     r"\(unknown \['median'\]\)"),
    (lambda: CBAM(64, pool_types=("lp", "lp")), r"CBAM: pool_types must be .* \(repeated entries\)"),
    (lambda: CBAM(64, pool_types=()), r"CBAM: pool_types must be .* got \(\) \(empty\)"),
    (lambda: CBAM(64, pool_types="lse"), r"CBAM: pool_types must be .* given as a sequence, e.g. \('lse',\)"),
    (lambda: SE(32)(torch.randn(2, 16, 4, 4)), r"SE: expected 32 input channels, got 16"),
    (lambda: CBAM(32)(torch.randn(2, 32, 4)), r"CBAM: expected a 4-D input \(B, C, H, W\), got shape \(2, 32, 4\)"),
    (lambda: av.create_attn("cbma", 64), r"create_attn: unknown name 'cbma'; did you mean 'cbam'"),
])
def test_bad_arguments_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_create_attn_builds_each_kind_and_identity():
    for kind, cls in LAYERS.items():
        assert isinstance(av.create_attn(kind, 64), cls)
    assert isinstance(av.create_attn(None, 64), torch.nn.Identity)
    assert isinstance(av.create_attn("none", 64), torch.nn.Identity)
    assert av.create_attn("cbam", 64, reduction=8).channel.fc1.out_features == 8


def test_bam_sum_form_starts_as_a_constant_half_gate_and_learns_from_there():
    torch.manual_seed(0)
    bam = BAM(16, reduction=4)
    assert [bn.weight.abs().sum().item() for bn in bam.gate_norms()] == [0.0, 0.0]
    assert BAM(16, reduction=4, combine="product").gate_norms() == []
    x = torch.randn(4, 16, 8, 8)
    bam.keep_attention = True
    y = bam(x)
    assert torch.all(bam.last_attention == 0.5) and torch.allclose(y, 1.5 * x)
    y.square().sum().backward()
    # the branches' last BNs get a gradient, so the gate leaves 0.5 after the first step
    assert all(bn.weight.grad.abs().sum() > 0 for bn in bam.gate_norms())
