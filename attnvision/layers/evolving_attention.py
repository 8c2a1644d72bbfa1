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
    if (prev_logits.dim() != 4 or tuple(prev_logits.shape[:2]) != (b, heads)
            or prev_logits.shape[2] != prev_logits.shape[3]):
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
    """The evolving step and the attention it weights, image by image, with a hand-written backward.

    ``apply(qkv, prev, weight, bias, alpha, beta, scale, slope) -> (out, A_logit)`` for ``qkv`` of
    (B, N, 3, K, d) (the q, k, v projection of :meth:`MultiHeadSelfAttention.project_qkv`) and
    ``prev`` of (B, K, N, N); ``out`` is A·V of (B, N, K, d), so the heads' concatenation is a view,
    and ``slope`` is the activation's negative slope (0: ReLU). It computes what
    :func:`evolve_logits`, a softmax and A·V compute:

    - one image at a time: each image's K maps are formed, convolved, used and dropped before the
      next image's, so that besides A_logit (the output) forward holds the maps of one image, and
      the passes over them run in cache;
    - A_input = α·prev + (1 − α)·s·QKᵀ is one ``baddbmm`` (no separate logits map);
    - backward keeps no map of its own: A_input is recomputed from q, k and ``prev`` (held by the
      caller anyway), A from A_logit, ∂L/∂prev is written image by image; the convolution's backward
      runs in channels-last layout (its CPU kernels are several times faster there, while the forward
      convolution is not);
    - the softmax backward's row sum Σ_j ∂L/∂A_ij · A_ij is ∂L/∂(AV)_i · (AV)_i (the identity flash
      attention uses), so ∂L/∂A − rowsum comes out of one ``baddbmm``, multiplied by A in place;
    - ∂L/∂q, ∂L/∂k, ∂L/∂v are written straight into one gradient of ``qkv``.

    Gradients are those of the composite path up to float rounding (tests: gradcheck in float64 and
    equality to it). Once differentiable: a second derivative needs the composite path.
    """

    @staticmethod
    def forward(ctx, qkv, prev, weight, bias, alpha: float, beta: float, scale: float, slope: float):
        b, n, _, heads, d = qkv.shape
        logits = qkv.new_empty(b, heads, n, n)  # A_logit
        out = qkv.new_empty(b, n, heads, d)
        for i in range(b):
            q, k, v = qkv[i].permute(1, 2, 0, 3).unbind(0)  # each (K, N, d), strided views
            a_in = _a_input(q, k, prev[i], alpha, scale)
            conv = _conv(a_in, weight, bias)
            if beta == 1.0:
                torch.ops.aten.leaky_relu.out(conv, slope, out=logits[i])
            else:
                torch.lerp(a_in, F.leaky_relu(conv, slope), beta, out=logits[i])
            del a_in, conv  # N×N maps are the memory here: each is dropped as soon as it is no longer needed
            out[i].transpose(0, 1).copy_(torch.bmm(torch.softmax(logits[i], -1), v))
        ctx.save_for_backward(qkv, prev, weight, bias, logits, out)
        ctx.settings = alpha, beta, scale, slope
        ctx.set_materialize_grads(False)  # an unused A_logit (the chain's last layer) gets no map of zeros
        return out, logits

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out, g_logits):
        qkv, prev, weight, bias, logits, out = ctx.saved_tensors
        alpha, beta, scale, slope = ctx.settings
        b, n, _, heads, d = qkv.shape
        g_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
        g_prev = torch.empty_like(logits)  # α·∂L/∂A_input, also read for ∂L/∂q and ∂L/∂k
        g_weight = torch.zeros_like(weight)
        g_bias = torch.zeros_like(bias) if bias is not None else None
        if g_out is None:
            g_out = torch.zeros_like(out)
        # softmax backward: ∂L/∂A_logit = A ⊙ (∂L/∂A − Σ_j ∂L/∂A_ij A_ij) with ∂L/∂A = ∂L/∂(AV)·Vᵀ; the row sum
        # is ∂L/∂(AV)_i · (AV)_i
        rows = torch.linalg.vecdot(g_out, out).neg_().transpose(1, 2).unsqueeze(-1)  # (B, K, N, 1)
        a = alpha if alpha > 0 else 1.0  # g_prev holds a·∂L/∂A_input
        c = (1.0 - alpha) * scale / a  # ∂L/∂(s·QKᵀ) = (1 − α)/α · ∂L/∂prev
        # the convolution's gradient to its input is linear in its weight: with a·W it comes out already scaled
        w_in = weight * a if a != 1.0 else weight
        cl, pad = torch.channels_last, [weight.shape[-1] // 2] * 2
        for i0 in range(0, b, _CONV_IMAGES):
            images = range(i0, min(b, i0 + _CONV_IMAGES))
            # ∂L/∂A_logit through the activation, and A_input, of the images whose convolution runs together
            g_conv = logits.new_empty(len(images), heads, n, n)
            a_in = logits.new_empty(len(images), heads, n, n)
            g_skip: list[torch.Tensor] | None = [] if beta != 1.0 else None
            for j, i in enumerate(images):
                q, k, v = qkv[i].permute(1, 2, 0, 3).unbind(0)
                go = g_out[i].transpose(0, 1)  # (K, N, d)
                attn = torch.softmax(logits[i], -1)  # A, recomputed rather than kept
                g_qkv[i, :, 2].transpose(0, 1).copy_(torch.bmm(attn.transpose(1, 2), go))  # ∂L/∂v
                g = torch.baddbmm(rows[i], go, v.transpose(1, 2)).mul_(attn)
                del attn
                if g_logits is not None:
                    g.add_(g_logits[i])
                _a_input(q, k, prev[i], alpha, scale, out=a_in[j])  # recomputed rather than kept
                if beta == 1.0:  # A_logit = act(conv), positive exactly where conv is
                    torch.ops.aten.leaky_relu_backward.grad_input(g, logits[i], slope, True, grad_input=g_conv[j])
                else:
                    torch.where(_conv(a_in[j], weight, bias) > 0, g, g * slope, out=g_conv[j]).mul_(beta)
                    assert g_skip is not None  # a list when beta != 1
                    g_skip.append(g.mul_((1.0 - beta) * a))
                del g
            # the convolution's backward in channels-last layout, a few images at a time: its CPU kernels are
            # several times faster there (element-wise passes are not: they write the contiguous layout, then
            # a copy converts each map)
            g_conv = g_conv.contiguous(memory_format=cl)  # one at a time: each contiguous copy is freed first
            a_in = a_in.contiguous(memory_format=cl)
            g_in, g_w, g_b = torch.ops.aten.convolution_backward(
                g_conv, a_in, w_in, [heads] if bias is not None else None, [1, 1], pad, [1, 1], False, [0, 0], 1,
                [True, True, bias is not None])
            del g_conv, a_in
            g_weight += g_w
            if g_bias is not None:
                g_bias += g_b
            g_prev[i0:i0 + len(images)].copy_(g_in)  # back to the layout of the matrix products
            del g_in
            for j, i in enumerate(images):
                q, k, _ = qkv[i].permute(1, 2, 0, 3).unbind(0)
                g_q, g_k, _ = g_qkv[i].permute(1, 2, 0, 3).unbind(0)
                g_a = g_prev[i] if g_skip is None else g_prev[i].add_(g_skip[j])  # a·∂L/∂A_input
                torch.mul(torch.bmm(g_a, k), c, out=g_q)
                torch.mul(torch.bmm(g_a.transpose(1, 2), q), c, out=g_k)
            del g_skip
        keep_prev = alpha != 0 and ctx.needs_input_grad[1]
        return g_qkv, g_prev if keep_prev else None, g_weight, g_bias, None, None, None, None


_CONV_IMAGES = 2  # images whose logit-image convolution runs as one backward call (faster per image than one)


def _a_input(q, k, prev, alpha: float, scale: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """A_input = α·prev + (1 − α)·s·QKᵀ for one image's (K, N, d) q, k and (K, N, N) prev: one baddbmm."""
    return torch.baddbmm(prev, q, k.transpose(1, 2), beta=alpha, alpha=(1.0 - alpha) * scale, out=out)


def _conv(a_in, weight, bias) -> torch.Tensor:
    """One image's K-channel N×N logit image through the k×k convolution: (K, N, N)."""
    return F.conv2d(a_in[None], weight, bias, padding=weight.shape[-1] // 2)[0]


def evolving_attention(qkv, prev, weight, bias, alpha: float, beta: float, scale: float, slope: float):
    """``(out, A_logit)`` of a chain's evolving step and the attention it weights, as
    :class:`EvolvingAttentionFunction` takes and returns them, computed by that function, or op by op
    where it does not apply: under autocast's mixed precisions and while ``torch.jit.trace``,
    ``torch.compile`` or ``torch.export`` records the call (they record the composite operations).

    It is a leaf of ``torch.fx`` graphs (``torch.fx.wrap``): a traced model calls this function where the
    eager one does, so the two compute the same values to the last bit (timm's FX tests, torchvision's
    feature extractor).
    """
    device = qkv.device.type  # autocast exists for some device types only (not for "meta")
    autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)
    if not autocast and not is_tracing():
        return EvolvingAttentionFunction.apply(qkv, prev, weight, bias, alpha, beta, scale, slope)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, d)
    logits = evolve_logits((q * scale) @ k.transpose(-2, -1), prev, weight, bias, alpha, beta,
                           "relu" if slope == 0.0 else "leaky_relu", slope)  # (B, heads, N, N)
    return (logits.softmax(-1) @ v).transpose(1, 2), logits


torch.fx.wrap("evolving_attention")


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

    def forward(self, x: torch.Tensor,
                prev_logits: torch.Tensor | None = None,  # type: ignore[override]  # previous logits, not a flag
                *, hw=None):
        qkv = self.project_qkv(x)
        n = x.shape[1]
        prev = usable_prev(type(self).__name__, (x.shape[0], self.heads, n), prev_logits)
        if self._fused(prev):
            out, logits = evolving_attention(qkv, prev, self.conv.weight, self.conv.bias, self.alpha, self.beta,
                                             self.scale, 0.0 if self.activation == "relu" else 0.01)
            return self.proj_drop(self.proj(out.reshape(x.shape))), logits
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        logits = evolve_logits(self.logits(q, k, hw), prev, self.conv.weight, self.conv.bias, self.alpha, self.beta,
                               self.activation)  # (B, heads, N, N)
        attn = logits.softmax(-1)
        self._keep(attn)
        return self.attend(attn, v, x.shape), logits

    def _fused(self, prev) -> bool:
        """Whether :func:`evolving_attention` computes this call: ``fused`` on, a chain to continue through
        the convolution, and nothing :class:`EvolvingAttentionFunction` does not handle (relative logits, the
        kept map, dropout on the map). What is known only when the call runs (autocast, an exporter
        recording it) :func:`evolving_attention` decides, so that a ``torch.fx`` graph decides it as eager does."""
        return (self.fused and prev is not None and self.beta > 0.0 and self.pos != "relative"
                and not self.keep_attention and not (self.training and self.attn_drop.p > 0.0))

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
