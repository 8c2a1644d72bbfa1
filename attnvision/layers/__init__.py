"""Attention mechanisms for vision, one per file, each citing the equation it implements."""
from ._base import AttentionLayer
from .bam import BAM
from .cbam import CBAM
from .create_attn import attn_names, create_attn, register_attn
from .drop import DropPath, drop_path, drop_path_rates
from .eca import ECA, eca_kernel_size
from .layer_scale import LayerScale
from .lka import LKA, lka_cost
from .mlp import Mlp
from .squeeze_excite import SE

__all__ = [
    "AttentionLayer", "BAM", "CBAM", "DropPath", "ECA", "LKA", "LayerScale", "Mlp", "SE",
    "attn_names", "create_attn", "drop_path", "drop_path_rates", "eca_kernel_size", "lka_cost", "register_attn",
]
