"""Attention mechanisms for vision, one per file, each citing the equation it implements."""
from ._base import AttentionLayer
from .bam import BAM
from .cbam import CBAM
from .create_attn import attn_names, create_attn, register_attn
from .drop import DropPath, drop_path, drop_path_rates
from .eca import ECA, eca_kernel_size
from .layer_scale import LayerScale
from .local_attention import LocalSelfAttention2d, SpatiallyAwareStem
from .mlp import Mlp
from .squeeze_excite import SE

__all__ = [
    "AttentionLayer", "BAM", "CBAM", "DropPath", "ECA", "LayerScale", "LocalSelfAttention2d", "Mlp", "SE",
    "SpatiallyAwareStem",
    "attn_names", "create_attn", "drop_path", "drop_path_rates", "eca_kernel_size", "register_attn",
]
