"""Evolving attention, multi-head self-attention and attention-augmented convolution."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnvision.layers import (AAConv2d, EvolvingAttention, EvolvingTransformerEncoder, MultiHeadSelfAttention,
                               collect_attention, evolve_logits)
from attnvision.layers.evolving_attention import EvolvingAttentionFunction


def _tokens(b=2, n=9, c=24):
    return torch.randn(b, n, c, dtype=torch.float64)


def _copy_attention(dst, src):
    dst.qkv.load_state_dict(src.qkv.state_dict())
    dst.proj.load_state_dict(src.proj.state_dict())


# -- MultiHeadSelfAttention ---------------------------------------------------------------------

@pytest.mark.parametrize("return_logits", [False, True])
def test_mhsa_equals_torch_multihead_attention_with_same_weights(return_logits):
    ours = MultiHeadSelfAttention(24, 4).double().eval()
    ref = nn.MultiheadAttention(24, 4, batch_first=True).double().eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x = _tokens()
    expected, weights = ref(x, x, x, average_attn_weights=False)
    out = ours(x, return_logits=return_logits)
    if return_logits:
        out, logits = out
        torch.testing.assert_close(logits.softmax(-1), weights, rtol=0, atol=1e-12)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_mhsa_relative_2d_logits_match_explicit_offset_sum():
    m = MultiHeadSelfAttention(16, 2, pos="relative", input_size=(5, 6)).double()
    h, w = 3, 4  # a smaller map uses the central rows of the tables
    x = torch.randn(1, h * w, 16, dtype=torch.float64)
    _, logits = m(x, return_logits=True, hw=(h, w))
    q, k, _ = m.project(x)
    q = q * m.scale
    expected = q @ k.transpose(-2, -1)
    for i in range(h * w):
        for j in range(h * w):
            dx, dy = j // w - i // w, j % w - i % w
            r = m.rel.rel_height[dx + 4] + m.rel.rel_width[dy + 5]
            expected[:, :, i, j] += q[:, :, i] @ r
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-12)


def test_mhsa_relative_logits_are_translation_equivariant_on_1d_sequences():
    m = MultiHeadSelfAttention(16, 4, pos="relative", input_size=8).double()
    with torch.no_grad():
        m.qkv.weight.zero_()  # logits are then the bias alone
    _, logits = m(_tokens(1, 6, 16), return_logits=True)
    assert torch.equal(logits[0, :, 1:, 1:], logits[0, :, :-1, :-1])


def test_mhsa_sdpa_path_equals_explicit_path_with_relative_position():
    m = MultiHeadSelfAttention(16, 2, pos="relative", input_size=(3, 3)).double().eval()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    out, _ = m(x, return_logits=True)
    torch.testing.assert_close(m(x), out, rtol=0, atol=1e-12)


def test_mhsa_rejects_maps_larger_than_its_tables_and_wrong_widths():
    m = MultiHeadSelfAttention(16, 2, pos="relative", input_size=(3, 3))
    with pytest.raises(ValueError, match="MultiHeadSelfAttention.*3×4"):
        m(torch.randn(1, 12, 16), hw=(3, 4))
    with pytest.raises(ValueError, match=r"\(B, N, 16\)"):
        m(torch.randn(1, 9, 8))
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadSelfAttention(10, 4)


def test_mhsa_absolute_embedding_is_added_to_tokens():
    m = MultiHeadSelfAttention(16, 2, pos="sinusoidal", input_size=5).double()
    plain = MultiHeadSelfAttention(16, 2).double()
    _copy_attention(plain, m)
    x = _tokens(2, 5, 16)
    torch.testing.assert_close(m(x), plain(x + m.pos_embed), rtol=0, atol=1e-12)


# -- the evolving step ---------------------------------------------------------------------------

def _evolving(alpha, beta, **kw):
    return EvolvingAttention(24, 4, alpha=alpha, beta=beta, **kw).double()


def test_alpha0_beta0_ignores_prev_logits_and_equals_plain_attention():
    ea = _evolving(0.0, 0.0)
    plain = MultiHeadSelfAttention(24, 4).double()
    _copy_attention(plain, ea)
    x = _tokens()
    out_a, logits_a = ea(x, torch.randn(2, 4, 9, 9, dtype=torch.float64))
    out_b, logits_b = ea(x, torch.randn(2, 4, 9, 9, dtype=torch.float64) * 5)
    assert torch.equal(out_a, out_b) and torch.equal(logits_a, logits_b)
    torch.testing.assert_close(out_a, plain(x), rtol=0, atol=1e-12)


def test_alpha1_beta0_passes_prev_logits_through_and_output_is_affine_in_x():
    ea = _evolving(1.0, 0.0)
    prev = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    x, y = _tokens(), _tokens()
    out_x, logits = ea(x, prev)
    assert torch.equal(logits, prev)
    out_y, _ = ea(y, prev)
    out_mix, _ = ea(0.3 * x + 0.7 * y, prev)  # fixed map: out = A·(xW_v)W_O + b is affine in x
    torch.testing.assert_close(out_mix, 0.3 * out_x + 0.7 * out_y, rtol=0, atol=1e-12)


def test_conv_path_changes_logits_exactly_when_beta_positive():
    x, prev = _tokens(), torch.randn(2, 4, 9, 9, dtype=torch.float64)
    base = _evolving(0.5, 0.0)
    _, without = base(x, prev)
    q, k, _ = base.project(x)
    expected_input = 0.5 * prev + 0.5 * (q * base.scale) @ k.transpose(-2, -1)
    torch.testing.assert_close(without, expected_input, rtol=0, atol=1e-12)
    conv = _evolving(0.5, 0.7)
    conv.load_state_dict(base.state_dict())
    _, with_conv = conv(x, prev)
    cnn = F.relu(conv.conv(expected_input))
    torch.testing.assert_close(with_conv, 0.7 * cnn + 0.3 * expected_input, rtol=0, atol=1e-12)
    assert (with_conv - without).abs().max() > 1e-3


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_gradient_reaches_prev_logits_exactly_when_alpha_positive(alpha):
    ea = _evolving(alpha, 1.0)
    prev = torch.randn(2, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    out, logits = ea(_tokens(), prev)
    (out.sum() + logits.sum()).backward()
    if alpha > 0:
        assert prev.grad is not None and prev.grad.abs().sum() > 0
    else:
        assert prev.grad is None


def test_prev_logits_of_another_size_restart_the_chain():
    ea = _evolving(0.5, 1.0)
    x = _tokens()
    fresh = ea(x)
    restarted = ea(x, torch.randn(2, 4, 16, 16, dtype=torch.float64))
    assert torch.equal(fresh[1], restarted[1])
    with pytest.raises(ValueError, match="EvolvingAttention: prev_logits"):
        ea(x, torch.randn(2, 3, 9, 9, dtype=torch.float64))


@pytest.mark.parametrize("prev_shape", [None, (2, 4, 16, 16)])
def test_evolving_layer_without_usable_prev_logits_is_plain_attention(prev_shape):
    ea = _evolving(0.5, 0.7)
    with torch.no_grad():
        ea.conv.bias.fill_(3.0)  # a convolution that ran would shift every logit
    plain = MultiHeadSelfAttention(24, 4).double()
    _copy_attention(plain, ea)
    x = _tokens()
    prev = None if prev_shape is None else torch.randn(*prev_shape, dtype=torch.float64)
    out, logits = ea(x, prev)
    ref_out, ref_logits = plain(x, return_logits=True)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-12)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)


def test_aaconv_evolve_without_prev_logits_is_plain_aaconv():
    plain = AAConv2d(8, 16, dk=8, dv=8, heads=2, input_size=5).double()
    ea = AAConv2d(8, 16, dk=8, dv=8, heads=2, input_size=5, evolve=True).double()
    ea.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    out, logits = ea(x)
    ref_out, ref_logits = plain(x, return_logits=True)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-12)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)


def test_evolving_attention_rejects_weights_outside_unit_interval():
    with pytest.raises(ValueError, match="EvolvingAttention: alpha"):
        EvolvingAttention(8, 2, alpha=1.5)
    with pytest.raises(ValueError, match="activation"):
        EvolvingAttention(8, 2, activation="gelu")


# -- the fused autograd function -----------------------------------------------------------------

SETTINGS = [(0.5, 1.0, "relu"), (0.3, 0.5, "leaky_relu"), (0.0, 1.0, "relu"), (1.0, 0.7, "relu"),
            (0.5, 1.0, "leaky_relu")]


@pytest.mark.parametrize("alpha,beta,activation", SETTINGS)
def test_fused_function_passes_gradcheck_in_float64(alpha, beta, activation):
    b, heads, n, d = 2, 3, 6, 4
    qkv = torch.randn(b, n, 3, heads, d, dtype=torch.float64, requires_grad=True)
    prev = torch.randn(b, heads, n, n, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(heads, heads, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(heads, dtype=torch.float64, requires_grad=True)
    slope = 0.0 if activation == "relu" else 0.01

    def fn(*inputs):
        return EvolvingAttentionFunction.apply(*inputs, alpha, beta, 0.5, slope)

    assert torch.autograd.gradcheck(fn, (qkv, prev, weight, bias))


@pytest.mark.parametrize("uses", ["out", "logits", "both"])  # an unused output gets no gradient (None)
@pytest.mark.parametrize("alpha,beta,activation", SETTINGS)
def test_fused_layer_equals_the_op_by_op_layer_in_outputs_and_gradients(alpha, beta, activation, uses):
    fused = _evolving(alpha, beta, activation=activation)
    plain = _evolving(alpha, beta, activation=activation)
    plain.load_state_dict(fused.state_dict())
    plain.fused = False
    x, prev, weights = _tokens(), torch.randn(2, 4, 9, 9, dtype=torch.float64), torch.randn(2, 4, 9, 9)
    results = []
    for layer in (fused, plain):
        xi, pi = x.clone().requires_grad_(), prev.clone().requires_grad_()
        out, logits = layer(xi, pi)
        results.append((out, logits, type(logits.grad_fn).__name__))
        # a gradient through the output, the next layer's map, or both
        loss = {"out": (out ** 2).sum(), "logits": (logits * weights).sum(),
                "both": (out ** 2).sum() + (logits * weights).sum()}[uses]
        grads = torch.autograd.grad(loss, [xi, pi, *layer.parameters()], allow_unused=True)
        results[-1] += tuple(grads)
    (out_f, logits_f, fn_f, *grads_f), (out_p, logits_p, fn_p, *grads_p) = results
    assert fn_f == "EvolvingAttentionFunctionBackward" and fn_p != fn_f
    torch.testing.assert_close(out_f, out_p, rtol=0, atol=1e-12)
    torch.testing.assert_close(logits_f, logits_p, rtol=0, atol=1e-12)
    for got, want in zip(grads_f, grads_p):
        if want is None:
            assert got is None  # α = 0: prev does not enter the layer
        else:
            torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_fused_chain_equals_the_op_by_op_chain():
    fused = EvolvingTransformerEncoder(32, depth=3, heads=4, dropout=0.0).double()
    plain = EvolvingTransformerEncoder(32, depth=3, heads=4, dropout=0.0).double()
    plain.load_state_dict(fused.state_dict())
    for block in plain.blocks[1:]:
        block.attn.fused = False
    x = torch.randn(2, 49, 32, dtype=torch.float64)
    outs = [enc(x) for enc in (fused, plain)]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-12)
    grads = [torch.autograd.grad(out.square().sum(), enc.parameters()) for out, enc in zip(outs, (fused, plain))]
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("case", ["keep_attention", "relative", "attn_drop", "no_prev", "beta0", "autocast"])
def test_what_the_fused_function_does_not_handle_runs_op_by_op(case):
    kw = dict(pos="relative", input_size=(3, 3)) if case == "relative" else {}
    if case == "attn_drop":
        kw["attn_drop"] = 0.5
    layer = _evolving(0.5, 0.0 if case == "beta0" else 1.0, **kw)
    if case != "attn_drop":
        layer.eval()
    layer.keep_attention = case == "keep_attention"
    prev = None if case == "no_prev" else torch.randn(2, 4, 9, 9, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast"):
        out, logits = layer(_tokens().requires_grad_(), prev)
    assert type(logits.grad_fn).__name__ != "EvolvingAttentionFunctionBackward"
    if case == "keep_attention":
        torch.testing.assert_close(layer.last_attention, logits.softmax(-1).detach())
    layer.keep_attention = False
    if case in ("keep_attention", "relative", "autocast"):  # the same call through the fused function otherwise
        _, fused_logits = layer(_tokens(), prev)
        assert case == "relative" or type(fused_logits.grad_fn).__name__ == "EvolvingAttentionFunctionBackward"


# -- the authors' 1-D PyTorch module ---------------------------------------------------------------

def _weight_norm(g, v):
    return g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1)


def _authors_augmented_conv1d(sd, prefix, x, prev, *, alpha, beta, heads=8, dilation=2, padding=4):
    """Their EAAugmentedConv1d, rebuilt on our evolve_logits; their α/β are our β/α."""
    conv_w = _weight_norm(sd[prefix + "conv.weight_g"], sd[prefix + "conv.weight_v"])
    conv = F.conv1d(x, conv_w, sd[prefix + "conv.bias"], dilation=dilation, padding=padding)[:, :, :-padding]
    b, _, length = x.shape
    dk = dv = sd[prefix + "qkv_conv.weight"].shape[0] // 3  # both fixtures use k = v = 0.25
    q, k, v = F.conv1d(x, sd[prefix + "qkv_conv.weight"], sd[prefix + "qkv_conv.bias"]).split([dk, dk, dv], 1)
    q = q.reshape(b, heads, dk // heads, length).transpose(2, 3) * (dk // heads) ** -0.5
    k = k.reshape(b, heads, dk // heads, length).transpose(2, 3)
    v = v.reshape(b, heads, dv // heads, length).transpose(2, 3)
    logits = evolve_logits(q @ k.transpose(-2, -1), prev, sd[prefix + "att_conv.0.weight"],
                           sd[prefix + "att_conv.0.bias"], alpha=beta, beta=alpha, activation="leaky_relu")
    # Their head concatenation reshapes the (B, heads, L, dvh) product as (B, heads·dvh, L) without a
    # transpose; that is reproduced here, not in our layers.
    attn_out = (logits.softmax(-1) @ v).reshape(b, dv, length)
    return torch.cat([conv, attn_out], 1), logits


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_evolving_step_reproduces_authors_augmented_conv1d(load_reference, dtype):
    ref = load_reference("ea_augconv1d.pt")
    sd = {k: v.to(dtype) for k, v in ref["state_dict"].items()}
    suffix = "fp64" if dtype == torch.float64 else "fp32"
    out, logits = _authors_augmented_conv1d(sd, "", ref["input"].to(dtype), ref["prev_att"].to(dtype),
                                            alpha=0.5, beta=0.3)
    tol = dict(rtol=0, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=5e-5)
    torch.testing.assert_close(logits, ref[f"att_logits_{suffix}"].to(dtype), **tol)
    torch.testing.assert_close(out, ref[f"output_{suffix}"].to(dtype), **tol)


def test_evolving_chain_reproduces_authors_causal_block(load_reference):
    ref = load_reference("ea_causal_block.pt")
    sd = {k: v.double() for k, v in ref["state_dict"].items()}

    def bn(x, p):
        return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                            eps=1e-5)

    def ffn(x, a, b):
        h = F.leaky_relu(F.linear(x.permute(2, 0, 1), sd[a + ".weight"], sd[a + ".bias"]))
        return F.linear(h, sd[b + ".weight"], sd[b + ".bias"]).permute(1, 2, 0)

    x = ref["input"].double()
    out, att = _authors_augmented_conv1d(sd, "conv1.", x, ref["prev_att"].double(), alpha=0.5, beta=0.3)
    out = ffn(bn(out, "norm2"), "linear1", "linear2")
    out, att = _authors_augmented_conv1d(sd, "conv2.", out, F.leaky_relu(att), alpha=0.5, beta=0.3)
    out = ffn(bn(out, "norm3"), "linear3", "linear4")
    out = bn(out + x, "norm1")
    torch.testing.assert_close(F.leaky_relu(att), ref["att_logits_fp64"].double(), rtol=0, atol=1e-9)
    torch.testing.assert_close(out, ref["output_fp64"].double(), rtol=0, atol=1e-9)


# -- AAConv2d ----------------------------------------------------------------------------------------

def test_aaconv_concatenates_convolution_and_attention_channels():
    m = AAConv2d(8, 16, dk=8, dv=4, heads=2, input_size=6).double()
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    out = m(x)
    assert out.shape == (2, 16, 6, 6)
    torch.testing.assert_close(out[:, :12], m.conv(x), rtol=0, atol=0)
    out2, logits = m(x, return_logits=True)
    torch.testing.assert_close(out2, out, rtol=0, atol=1e-12)
    assert logits.shape == (2, 2, 36, 36)


def test_aaconv_stride_pools_the_attention_input_and_downsample_restores_size():
    m = AAConv2d(8, 16, dk=8, dv=8, heads=2, stride=2, input_size=8, downsample=True, evolve=True)
    out, logits = m(torch.randn(2, 8, 8, 8))
    assert out.shape == (2, 16, 4, 4) and logits.shape == (2, 2, 4, 4)


def test_aaconv_evolve_with_alpha0_beta0_equals_plain_aaconv():
    plain = AAConv2d(8, 16, dk=8, dv=8, heads=2, input_size=5).double()
    ea = AAConv2d(8, 16, dk=8, dv=8, heads=2, input_size=5, evolve=True, alpha=0.0, beta=0.0).double()
    ea.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    out, _ = ea(x, torch.randn(2, 2, 25, 25, dtype=torch.float64))
    torch.testing.assert_close(out, plain(x), rtol=0, atol=1e-12)


def test_aaconv_rejects_prev_logits_without_evolve_and_bad_depths():
    m = AAConv2d(8, 16, dk=8, dv=8, heads=2)
    with pytest.raises(ValueError, match="AAConv2d: prev_logits needs evolve"):
        m(torch.randn(1, 8, 4, 4), torch.randn(1, 2, 16, 16))
    with pytest.raises(ValueError, match="AAConv2d: dk and dv"):
        AAConv2d(8, 16, dk=6, dv=8, heads=4)


# -- sequences and maps of every layer -------------------------------------------------------------

def test_encoder_chains_logits_and_collects_every_layer_map_in_order():
    enc = EvolvingTransformerEncoder(16, 3, 4, dropout=0.0).eval()
    x = torch.randn(2, 7, 16)
    out, logits = enc(x, return_logits=True)
    assert out.shape == x.shape and logits.shape == (2, 4, 7, 7)
    maps = collect_attention(enc, x)
    assert list(maps) == ["blocks.0.attn", "blocks.1.attn", "blocks.2.attn"]
    torch.testing.assert_close(maps["blocks.2.attn"], logits.softmax(-1))
    assert not enc.blocks[0].attn.keep_attention


def test_aaconv_starts_as_the_authors_tensorflow_code():
    m = AAConv2d(256, 256, dk=64, dv=32, heads=8, input_size=4, evolve=True)
    for conv in (m.conv, m.qkv, m.proj, m.attn_conv):
        std = (1.0 / conv.weight[0].numel()) ** 0.5  # variance scaling: fan-in, scale 1
        assert conv.weight.std().item() == pytest.approx(std, rel=0.02 if conv.weight.numel() > 10_000 else 0.1)
        assert conv.weight.abs().max().item() <= 2 * std / 0.87962566103423978  # truncated at 2σ
        assert conv.bias is None or torch.all(conv.bias == 0)
