"""Relative attention (Dai, Liu, Le and Tan, "CoAtNet: Marrying Convolution and Attention for
All Data Sizes", NeurIPS 2021, Sec. 2.1, eq. 3).

A depth-wise convolution kernel w_{i−j} over the whole map, merged into multi-head global
self-attention over the H×W positions of a feature map. With q, k, v the per-head
projections of the input and d the head width:

    rel="pre"  (relative attention, eq. 3):  y_i = Σ_j softmax_j(q_iᵀk_j / √d + w_{i−j}) v_j
    rel="post" (eq. 2's alternative):        y_i = Σ_j (softmax_j(q_iᵀk_j / √d) + w_{i−j}) v_j
    rel="none" (plain attention):            y_i = Σ_j softmax_j(q_iᵀk_j / √d) v_j

then the heads are concatenated and projected. w is learned per head and translation
invariant: it depends only on the 2-D offset i − j ∈ [−(H−1), H−1] × [−(W−1), W−1], so it is
stored as a (heads, 2H−1, 2W−1) table and gathered into a (heads, N, N) bias, N = H·W,
which is block-Toeplitz (:meth:`RelativeAttention2d.relative_bias`).

Other sizes: the table is learned for ``input_size``. On an H'×W' input it is resized to
(2H'−1, 2W'−1) by bilinear interpolation (half-pixel centres, as Google Research's reference
code, github.com/google-research/maxvit, does when fine-tuning at 384 a model trained at 224), then gathered.
A checkpoint whose tables were made at another size is resized the same way when it is loaded (``load_state_dict`` or
``attnvision.load_checkpoint``); :func:`resize_relative_table` does it by hand.

The fused ``scaled_dot_product_attention`` kernel computes "pre" with the gathered bias as
its additive ``attn_mask``, "none" without a mask, and "post" as SDPA(q, k, v) + w·v.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import AttentionLayer
from ._checks import check_choice, check_positive_int, is_tracing
from .mlp import MapLinear

REL_MODES = ("pre", "post", "none")


def _pair(module: str, name: str, value) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{module}: {name} must be an int or an (H, W) pair, got {value!r}")
    for v in pair:
        check_positive_int(module, name, v)
    return pair


def relative_index(height: int, width: int, device=None) -> torch.Tensor:
    """(N, N) index into a flattened (2H−1)·(2W−1) table: entry [i, j] is the slot of offset i − j."""
    ys = torch.arange(height, device=device)
    xs = torch.arange(width, device=device)
    dy = ys[:, None] - ys[None, :] + (height - 1)                    # (H, H)
    dx = xs[:, None] - xs[None, :] + (width - 1)                     # (W, W)
    index = dy[:, None, :, None] * (2 * width - 1) + dx[None, :, None, :]  # (H, W, H, W)
    return index.reshape(height * width, height * width)


def resize_relative_table(table: torch.Tensor, input_size) -> torch.Tensor:
    """Resize a (heads, 2H−1, 2W−1) table to serve an ``input_size`` = (H', W') map (bilinear)."""
    if is_tracing():
        # Sizes are symbolic: no branch on them. Bilinear resampling to the same size is the identity.
        h, w = input_size
        return F.interpolate(table[None], size=(2 * h - 1, 2 * w - 1), mode="bilinear", align_corners=False)[0]
    h, w = _pair("resize_relative_table", "input_size", input_size)
    if table.dim() != 3:
        raise ValueError(f"resize_relative_table: expected a (heads, 2H-1, 2W-1) table, got shape {tuple(table.shape)}")
    target = (2 * h - 1, 2 * w - 1)
    if tuple(table.shape[1:]) == target:
        return table
    return F.interpolate(table[None], size=target, mode="bilinear", align_corners=False)[0]


class RelativeAttention2d(AttentionLayer):
    """Multi-head global self-attention over an H×W map with a learned relative bias.

    Args:
        dim: input channels.
        input_size: (H, W) (or an int) of the maps the bias table is learned for.
        heads: number of heads (default ``dim_out // head_dim``).
        head_dim: width of a head when ``heads`` is not given (the paper: 32).
        rel: "pre" (the paper's relative attention), "post" or "none".
        dim_out: output channels (default ``dim``); q, k, v and the heads have this width,
            as in the first, down-sampling block of a CoAtNet stage.
        qkv_bias: bias of the q/k/v projection. attn_drop, proj_drop: dropout rates.

    ``forward`` takes (B, dim, H, W) maps; :meth:`forward_tokens` takes channels-last
    (B, H, W, dim) maps, which is what the CoAtNet blocks use. With ``keep_attention`` the
    (B, heads, N, N) attention matrix (softmax, plus w for "post") is kept.
    """

    def __init__(self, dim: int, input_size, heads: int | None = None, head_dim: int = 32, rel: str = "pre", *,
                 dim_out: int | None = None, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        name = "RelativeAttention2d"
        check_positive_int(name, "dim", dim)
        check_choice(name, "rel", rel, REL_MODES)
        dim_out = check_positive_int(name, "dim_out", dim_out) if dim_out is not None else dim
        if heads is None:
            check_positive_int(name, "head_dim", head_dim)
            if dim_out % head_dim:
                raise ValueError(f"{name}: dim_out={dim_out} is not a multiple of head_dim={head_dim}")
            heads = dim_out // head_dim
        check_positive_int(name, "heads", heads)
        if dim_out % heads:
            raise ValueError(f"{name}: dim_out={dim_out} is not a multiple of heads={heads}")
        self.dim, self.dim_out, self.heads, self.head_dim = dim, dim_out, heads, dim_out // heads
        self.input_size = _pair(name, "input_size", input_size)
        self.rel = rel
        self.scale = self.head_dim ** -0.5
        self.fused_attn = True  # SDPA kernel; False runs the explicit formulas (kept maps always do)

        self.qkv = MapLinear(dim, 3 * dim_out, bias=qkv_bias)  # on (B, H, W, C) maps
        h, w = self.input_size
        if rel == "none":
            self.register_parameter("relative_bias_table", None)
        else:
            self.relative_bias_table = nn.Parameter(torch.empty(heads, 2 * h - 1, 2 * w - 1))
            nn.init.trunc_normal_(self.relative_bias_table, std=0.02)
        self.attn_drop = attn_drop
        self.proj = MapLinear(dim_out, dim_out)
        self.proj_drop = nn.Dropout(proj_drop)

    def relative_bias(self, size=None) -> torch.Tensor:
        """The (heads, N, N) bias w_{i−j} for an H×W map (default ``input_size``); N = H·W."""
        if self.relative_bias_table is None:
            raise ValueError("RelativeAttention2d: rel='none' has no relative bias")
        if size is None:
            size = self.input_size
        h, w = size if is_tracing() else _pair("RelativeAttention2d", "size", size)
        table = resize_relative_table(self.relative_bias_table, (h, w))     # (heads, 2H-1, 2W-1)
        index = relative_index(h, w, device=table.device)                   # (N, N)
        return table.flatten(1)[:, index]                                   # (heads, N, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_tracing() and (not isinstance(x, torch.Tensor) or x.dim() != 4):
            raise ValueError(f"RelativeAttention2d: expected a (B, C, H, W) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        return self.forward_tokens(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) → (B, H, W, dim_out)."""
        if not is_tracing() and (x.dim() != 4 or x.shape[-1] != self.dim):
            raise ValueError(f"RelativeAttention2d: expected channels-last maps (B, H, W, {self.dim}), "
                             f"got {tuple(x.shape)}")
        b, h, w = x.shape[0], x.shape[1], x.shape[2]
        n = h * w
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)                                              # (B, heads, N, d)
        bias = None if self.rel == "none" else self.relative_bias((h, w)).to(q.dtype)[None]  # (1, heads, N, N)
        drop = self.attn_drop if self.training else 0.0
        # Exporters get the explicit product: the strides of SDPA's output at trace time are not those of
        # its decomposition, and the (B, N, heads·d) view below fails on the latter (ONNX export).
        if self.fused_attn and not self.keep_attention and not torch.compiler.is_exporting():
            # a 4-D mask keeps SDPA on its fused CPU kernel (a 3-D one falls back to the math path)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias if self.rel == "pre" else None,
                                                 dropout_p=drop)             # (B, heads, N, d)
            if self.rel == "post":
                out = out + bias @ v
        else:
            logits = (q * self.scale) @ k.transpose(-2, -1)                  # (B, heads, N, N)
            if self.rel == "pre":
                logits = logits + bias
            attn = logits.softmax(dim=-1)
            if self.rel == "post":
                attn = attn + bias
            self._keep(attn)
            out = F.dropout(attn, drop, self.training) @ v                   # (B, heads, N, d)
        out = out.transpose(1, 2).reshape(b, h, w, self.dim_out)
        return self.proj_drop(self.proj(out))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "relative_bias_table"
        table = state_dict.get(key)
        own = self.relative_bias_table
        if table is not None and own is not None and table.dim() == 3 and table.shape[0] == own.shape[0] \
                and table.shape[1:] != own.shape[1:]:
            state_dict[key] = resize_relative_table(table, ((own.shape[1] + 1) // 2, (own.shape[2] + 1) // 2))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, dim_out={self.dim_out}, heads={self.heads}, input_size={self.input_size}, "
                f"rel={self.rel!r}")


def resize_relative_tables(state_dict: dict, model: nn.Module) -> dict:
    """Resize every relative bias table of ``state_dict`` made at another size to ``model``'s sizes."""
    out = dict(state_dict)
    for name, module in model.named_modules():
        if isinstance(module, RelativeAttention2d) and module.relative_bias_table is not None:
            key = f"{name}.relative_bias_table" if name else "relative_bias_table"
            table = out.get(key)
            if table is not None and table.dim() == 3 and table.shape[0] == module.heads:
                out[key] = resize_relative_table(table, module.input_size)
    return out
