"""Evolving attention (Wang et al., "Evolving Attention with Residual Convolutions", ICML 2021).

The K heads' attention logits of a layer form a K-channel N×N image; consecutive layers are
chained by a residual link and the image is refined by a convolution:

    A_input^i = α · A_logit^{i−1} + (1 − α) · Attention(X)_logit^i
    A_logit^i = β · CNN(A_input^i) + (1 − β) · A_input^i
    A^i       = softmax(A_logit^i)
    out       = Concat_h(A^i_h V_h) W_O

Attention(X)_logit = QKᵀ/√d (+ R with relative position). CNN is a k×k convolution over the
K-channel logit image (K → K channels, with bias, "same" padding) followed by an activation:
ReLU in the authors' TensorFlow ImageNet code (the default), LeakyReLU (slope 0.01) in their 1-D
PyTorch code. Defaults α = 0.5, β = 1.0 are their ImageNet settings.

Notation: the authors' code names the two weights the other way round: their ``beta`` weights
the previous layer's logits (our α) and their ``alpha`` the convolved map (our β). Their
ImageNet default "beta=0.5, alpha=1" is our α = 0.5, β = 1.0; their time-series fixture
"alpha=0.5, beta=0.3" is our α = 0.3, β = 0.5.

With no usable previous logits (``prev_logits=None``, or logits of a map of another size N: a
resolution change restarts the chain) the layer is plain attention, A_logit = Attention(X)_logit:
the authors' code applies the convolution only when a previous map of the same shape exists
(EAResnet50/official/resnet/resnet_model.py, ``asconv2d_fixed_padding``: ``if len(prev_atts) > 0``
and the shapes match). The models here also build no convolution for the first layer of a chain
(:class:`EvolvingBlock` with ``chain="start"``), so it holds no unused parameters.

:func:`evolve_logits` is the functional core (the two equations above), shared by
:class:`EvolvingAttention`, :class:`~attnvision.layers.AAConv2d` and the tests that reproduce
the authors' module. :class:`EvolvingTransformerEncoder` is the EA-Transformer for (B, N, C)
sequences (text, time series): post-norm blocks with a ReLU feed-forward network.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice, check_positive_int, is_tracing
from .drop import DropPath, drop_path_rates
from .layer_scale import LayerScale
from .mlp import Mlp
from .multihead_attention import MultiHeadSelfAttention

ACTIVATIONS = ("relu", "leaky_relu")
CHAIN_ROLES = ("none", "start", "evolve")


def check_weight(module: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{module}: {name} must be a number in [0, 1], got {value!r}")
    return float(value)


def evolving_settings(module: str, heads: int, alpha, beta, kernel_size, activation: str,
                      kernel_arg: str = "kernel_size") -> tuple[float, float, str, nn.Conv2d]:
    """Checked α, β and activation of an evolving layer, and its heads → heads k×k logit convolution
    ("same" padding, so the N×N map keeps its size). ``kernel_arg`` names the size in error messages."""
    alpha, beta = check_weight(module, "alpha", alpha), check_weight(module, "beta", beta)
    check_positive_int(module, kernel_arg, kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(f"{module}: {kernel_arg} must be odd to keep the N×N map, got {kernel_size}")
    check_choice(module, "activation", activation, ACTIVATIONS)
    return alpha, beta, activation, nn.Conv2d(heads, heads, kernel_size, padding=kernel_size // 2)


def usable_prev(module: str, shape: tuple[int, int, int], prev_logits: torch.Tensor | None) -> torch.Tensor | None:
    """``prev_logits`` if it continues the chain of this layer's (B, heads, N) logits, None if its N differs
    (a restart); other mismatches raise."""
    if prev_logits is None:
        return None
    if is_tracing():
        # The chain's roles come from the sizes at construction; traced sizes cannot be compared.
        return prev_logits
    if not isinstance(prev_logits, torch.Tensor):
        raise TypeError(f"{module}: prev_logits must be a tensor or None, got {type(prev_logits).__name__}")
    b, heads, n = shape
    if prev_logits.dim() != 4 or tuple(prev_logits.shape[:2]) != (b, heads) or prev_logits.shape[2] != prev_logits.shape[3]:
        raise ValueError(f"{module}: prev_logits must be (B, heads, N', N') = {(b, heads)} + (N', N'), "
                         f"got {tuple(prev_logits.shape)}")
    return prev_logits if prev_logits.shape[-1] == n else None


def evolve_logits(logits: torch.Tensor, prev_logits: torch.Tensor | None, weight: torch.Tensor,
                  bias: torch.Tensor | None, alpha: float, beta: float, activation: str = "relu",
                  negative_slope: float = 0.01) -> torch.Tensor:
    """The evolving step: (B, K, N, N) logits of this layer and of the previous one → A_logit.

    A_input = α·prev + (1 − α)·logits;
    A_logit = β·act(conv(A_input; weight, bias)) + (1 − β)·A_input.
    Without ``prev_logits`` there is nothing to evolve: the logits come back unchanged, with no
    convolution (the authors' ``asconv2d_fixed_padding``).
    """
    if prev_logits is None:
        return logits
    a_input = logits if alpha == 0.0 else torch.lerp(logits, prev_logits, alpha)
    del logits  # N×N maps are the memory here: each is dropped as soon as it is no longer needed
    if beta == 0.0:
        return a_input
    # A K-channel image of N×N pixels: channels-last convolution kernels are several times faster
    # here (above all the weight gradient); the result comes back to the softmax-friendly layout.
    a_cl = a_input.contiguous(memory_format=torch.channels_last)
    if beta == 1.0:
        del a_input
    conv = F.conv2d(a_cl, weight, bias, padding=weight.shape[-1] // 2)
    del a_cl
    conv = conv.contiguous()  # (B, K, N, N)
    conv = F.relu_(conv) if activation == "relu" else F.leaky_relu_(conv, negative_slope)
    return conv if beta == 1.0 else torch.lerp(a_input, conv, beta)


class EvolvingAttentionFunction(torch.autograd.Function):
    """The evolving step and the attention it weights, with a hand-written backward that keeps less.

    ``apply(q, k, v, prev, weight, bias, alpha, beta, scale, slope) -> (A V, A_logit)`` for q, k, v of
    (B, K, N, d) and ``prev`` of (B, K, N, N); ``slope`` is the activation's negative slope (0: ReLU).
    It computes what :func:`evolve_logits`, a softmax and A·V compute, in fewer passes over the
    N×N maps:

    - A_input = α·prev + (1 − α)·s·QKᵀ is one ``baddbmm`` (no separate logits map, no lerp pass);
    - the activation writes A_logit straight back from the convolution's channels-last layout;
    - the softmax backward's row sum Σ_j ∂L/∂A_ij · A_ij is ∂L/∂(AV)_i · (AV)_i (the identity flash
      attention uses), so ∂L/∂A − rowsum comes out of one ``baddbmm`` and is multiplied by A in place;
    - backward keeps A_input (channels-last, the convolution's input) and A_logit, not A: A is
      recomputed, and ∂L/∂prev is written in the pass that leaves the convolution's layout.

    Gradients are those of the composite path up to float rounding (tests: gradcheck in float64 and
    equality to it). Once differentiable: a second derivative needs the composite path.
    """

    @staticmethod
    def forward(ctx, q, k, v, prev, weight, bias, alpha: float, beta: float, scale: float, slope: float):
        b, heads, n, d = q.shape
        # one copy each of the projections' strided views; every product below reads them as (B·K, N, d)
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        a_in = torch.baddbmm(prev.reshape(b * heads, n, n), q.view(-1, n, d), k.view(-1, n, d).transpose(1, 2),
                             beta=alpha, alpha=(1.0 - alpha) * scale).view(b, heads, n, n)  # A_input
        a_cl = a_in.contiguous(memory_format=torch.channels_last)
        if beta == 1.0:
            del a_in  # N×N maps are the memory here: each is dropped as soon as it is no longer needed
        conv = F.conv2d(a_cl, weight, bias, padding=weight.shape[-1] // 2)  # channels-last
        logits = torch.empty(b, heads, n, n, dtype=q.dtype, device=q.device)  # A_logit, contiguous
        mask = None
        if beta == 1.0:
            torch.ops.aten.leaky_relu.out(conv, slope, out=logits)
        else:
            mask = conv > 0
            torch.lerp(a_in, F.leaky_relu(conv, slope), beta, out=logits)
            del a_in
        del conv
        out = torch.bmm(torch.softmax(logits, -1).view(-1, n, n), v.view(-1, n, d)).view(b, heads, n, d)  # A·V
        ctx.save_for_backward(q, k, v, weight, a_cl, logits, out, mask)
        ctx.settings = alpha, beta, scale, slope, bias is not None
        return out, logits

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out, g_logits):
        q, k, v, weight, a_cl, logits, out, mask = ctx.saved_tensors
        alpha, beta, scale, slope, has_bias = ctx.settings
        b, heads, n, d = q.shape
        q3, k3, v3 = q.view(-1, n, d), k.view(-1, n, d), v.view(-1, n, d)
        if g_out is None:
            g_out = torch.zeros_like(out)
        g_out3 = g_out.contiguous().view(-1, n, d)
        attn = torch.softmax(logits, -1).view(-1, n, n)  # A, recomputed rather than kept
        g_v = torch.bmm(attn.transpose(1, 2), g_out3).view(b, heads, n, d)
        # softmax backward: ∂L/∂A_logit = A ⊙ (∂L/∂A − Σ_j ∂L/∂A_ij A_ij) with ∂L/∂A = ∂L/∂(AV)·Vᵀ; the row
        # sum is ∂L/∂(AV)_i · (AV)_i: one baddbmm and one in-place product, no other N×N map
        row = torch.linalg.vecdot(g_out, out).view(-1, n, 1)
        g = torch.baddbmm(row.neg_(), g_out3, v3.transpose(1, 2)).mul_(attn).view(b, heads, n, n)
        del attn
        if g_logits is not None:
            g.add_(g_logits)
        g_conv = torch.empty_like(a_cl)  # the convolution's backward wants its own layout
        if mask is None:  # β = 1: A_logit = act(conv), positive exactly where conv is
            torch.ops.aten.leaky_relu_backward.grad_input(g, logits, slope, True, grad_input=g_conv)
        else:
            torch.where(mask, g, g * slope, out=g_conv).mul_(beta)
        g_in, g_weight, g_bias = torch.ops.aten.convolution_backward(
            g_conv, a_cl, weight, [heads] if has_bias else None, [1, 1], [weight.shape[-1] // 2] * 2, [1, 1], False,
            [0, 0], 1, [True, True, has_bias])
        del g_conv
        if beta != 1.0:
            g_in.add_(g, alpha=1.0 - beta)
        del g
        # ∂L/∂prev = α·∂L/∂A_input, written contiguous in the pass that leaves the convolution's layout;
        # ∂L/∂(s·QKᵀ) = (1 − α)·∂L/∂A_input is the same map times (1 − α)/α
        g_prev = torch.mul(g_in, alpha if alpha > 0 else 1.0, out=torch.empty_like(logits))
        del g_in
        g3, c = g_prev.view(-1, n, n), (1.0 - alpha) * scale / (alpha if alpha > 0 else 1.0)
        unread = g3.new_empty(1, 1, 1)  # baddbmm with beta = 0 scales the product and never reads its input
        g_q = torch.baddbmm(unread, g3, k3, beta=0.0, alpha=c).view(b, heads, n, d)
        g_k = torch.baddbmm(unread, g3.transpose(1, 2), q3, beta=0.0, alpha=c).view(b, heads, n, d)
        if alpha == 0 or not ctx.needs_input_grad[3]:
            g_prev = None
        return g_q, g_k, g_v, g_prev, g_weight, g_bias, None, None, None, None


class EvolvingAttention(MultiHeadSelfAttention):
    """Evolving multi-head self-attention on (B, N, C) tokens: ``forward(x, prev_logits=None) -> (out, logits)``.

    ``logits`` is this layer's A_logit (B, heads, N, N), the ``prev_logits`` of the next layer.

    Args:
        dim, heads: as :class:`MultiHeadSelfAttention` (and its ``qkv_bias``, dropouts, ``pos``, ``input_size``).
        alpha: weight of the previous layer's logits. beta: weight of the convolved map.
        kernel_size: the k×k convolution over the heads' logit image.
        activation: "relu" (the authors' ImageNet code) or "leaky_relu" (their 1-D code).

    ``fused`` (default True): continue a chain through :class:`EvolvingAttentionFunction`, which keeps
    less memory for backward; False runs the same equations op by op (PyTorch's autograd), which also
    gives second derivatives.
    """

    fused: bool = True

    def __init__(self, dim: int, heads: int = 8, alpha: float = 0.5, beta: float = 1.0, kernel_size: int = 3,
                 activation: str = "relu", **kwargs):
        super().__init__(dim, heads, **kwargs)
        self.alpha, self.beta, self.activation, self.conv = evolving_settings(
            type(self).__name__, heads, alpha, beta, kernel_size, activation)

    def forward(self, x: torch.Tensor, prev_logits: torch.Tensor | None = None, *, hw=None):
        q, k, v = self.project(x)
        n = x.shape[1]
        prev = usable_prev(type(self).__name__, (x.shape[0], self.heads, n), prev_logits)
        if self._fused(prev, x):
            out, logits = EvolvingAttentionFunction.apply(
                q, k, v, prev, self.conv.weight, self.conv.bias, self.alpha, self.beta, self.scale,
                0.0 if self.activation == "relu" else 0.01)
            return self.merge_heads(out, x.shape), logits
        logits = evolve_logits(self.logits(q, k, hw), prev, self.conv.weight, self.conv.bias, self.alpha, self.beta,
                               self.activation)  # (B, heads, N, N)
        attn = logits.softmax(-1)
        self._keep(attn)
        return self.attend(attn, v, x.shape), logits

    def _fused(self, prev, x) -> bool:
        """Whether :class:`EvolvingAttentionFunction` computes this call: ``fused`` on, a chain to continue
        through the convolution, and nothing it does not handle (relative logits, the kept map, dropout on
        the map, autocast's mixed precisions, tracing, which records the composite path)."""
        if not self.fused or prev is None or is_tracing():
            return False
        device = x.device.type  # autocast exists for some device types only (not for "meta")
        autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)
        return (self.beta > 0.0 and self.pos != "relative" and not self.keep_attention
                and not (self.training and self.attn_drop.p > 0.0) and not autocast)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", alpha={self.alpha}, beta={self.beta}, activation={self.activation!r}"


class EvolvingBlock(nn.Module):
    """A transformer block whose attention takes part in an evolving chain.

    ``chain``: "none" (plain attention, returns no logits), "start" (plain attention that hands
    its logits on; the authors' first layer has no convolution) or "evolve" (EvolvingAttention).
    ``norm_first``: pre-norm (ViT: x + attn(norm(x))) or post-norm (Transformer: norm(x + attn(x))).
    ``forward(x, prev_logits=None) -> (x, logits or None)``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, *, chain: str = "none", qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, init_values: float | None = None,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm, norm_first: bool = True, alpha: float = 0.5,
                 beta: float = 1.0, kernel_size: int = 3, activation: str = "relu", pos: str = "none",
                 input_size=None):
        super().__init__()
        check_choice("EvolvingBlock", "chain", chain, CHAIN_ROLES)
        self.chain, self.norm_first = chain, norm_first
        kw = dict(qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop, pos=pos, input_size=input_size)
        self.norm1 = norm_layer(dim)
        self.attn = (EvolvingAttention(dim, heads, alpha, beta, kernel_size, activation, **kw) if chain == "evolve"
                     else MultiHeadSelfAttention(dim, heads, **kw))
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _attention(self, x, prev_logits):
        if self.chain == "evolve":
            return self.attn(x, prev_logits)
        if prev_logits is not None:
            raise ValueError(f"EvolvingBlock: a block with chain={self.chain!r} takes no prev_logits")
        if self.chain == "start":
            return self.attn(x, return_logits=True)
        return self.attn(x), None

    def forward(self, x: torch.Tensor, prev_logits: torch.Tensor | None = None):
        if self.norm_first:
            a, logits = self._attention(self.norm1(x), prev_logits)
            x = x + self.drop_path1(self.ls1(a))
            x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        else:
            a, logits = self._attention(x, prev_logits)
            x = self.norm1(x + self.drop_path1(self.ls1(a)))
            x = self.norm2(x + self.drop_path2(self.ls2(self.mlp(x))))
        return x, logits


class EvolvingTransformerEncoder(nn.Module):
    """The EA-Transformer encoder for (B, N, C) sequences: ``depth`` post-norm blocks, ReLU feed-forward.

    The first block starts the chain with plain attention; every later one evolves its
    predecessor's logits. ``forward(x, return_logits=False)`` returns (B, N, C), or also the
    last layer's logits. ``pos`` / ``input_size`` give the attention a position term
    ("relative" with ``input_size=N`` is a learned per-head bias over offsets).
    """

    def __init__(self, dim: int, depth: int, heads: int = 8, mlp_ratio: float = 4.0, *, dropout: float = 0.1,
                 attn_drop: float = 0.0, drop_path_rate: float = 0.0, alpha: float = 0.5, beta: float = 1.0,
                 kernel_size: int = 3, activation: str = "relu", norm_first: bool = False, pos: str = "none",
                 input_size=None):
        super().__init__()
        check_positive_int("EvolvingTransformerEncoder", "depth", depth)
        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            EvolvingBlock(dim, heads, mlp_ratio, chain="start" if i == 0 else "evolve", drop=dropout,
                          attn_drop=attn_drop, drop_path=dpr[i], act_layer=nn.ReLU, norm_first=norm_first,
                          alpha=alpha, beta=beta, kernel_size=kernel_size, activation=activation, pos=pos,
                          input_size=input_size)
            for i in range(depth))
        self.norm = nn.LayerNorm(dim) if norm_first else nn.Identity()

    def forward(self, x: torch.Tensor, return_logits: bool = False):
        logits = None
        for block in self.blocks:
            x, logits = block(x, logits)
        x = self.norm(x)
        return (x, logits) if return_logits else x
