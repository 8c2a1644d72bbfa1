"""Attention mechanisms for vision, one per file, each citing the equation it implements."""
from ._base import AttentionLayer, collect_attention
from .augmented_conv import AAConv2d
from .adaptive_pool import SelectAdaptivePool2d
from .bam import BAM
from .cbam import CBAM
from .create_attn import attn_names, create_attn, register_attn
from .drop import DropPath, drop_path, drop_path_rates
from .eca import ECA, eca_kernel_size
from .evolving_attention import EvolvingAttention, EvolvingBlock, EvolvingTransformerEncoder, evolve_logits
from .layer_scale import LayerScale
from .lka import LKA, lka_cost
from .local_attention import LocalSelfAttention2d, SpatiallyAwareStem
from .mbconv import MBConv
from .mlp import Mlp
from .multihead_attention import MultiHeadSelfAttention
from .pointwise import PointwiseConv2d, pointwise_conv2d
from .relative_attention import RelativeAttention2d, resize_relative_table
from .squeeze_excite import SE

__all__ = [
    "AAConv2d", "AttentionLayer", "BAM", "CBAM", "DropPath", "ECA", "EvolvingAttention", "EvolvingBlock",
    "EvolvingTransformerEncoder", "LKA", "LayerScale", "LocalSelfAttention2d", "MBConv", "Mlp",
    "MultiHeadSelfAttention", "PointwiseConv2d", "RelativeAttention2d", "SE", "SelectAdaptivePool2d",
    "SpatiallyAwareStem", "attn_names", "collect_attention", "create_attn", "drop_path", "drop_path_rates",
    "eca_kernel_size", "evolve_logits", "lka_cost", "pointwise_conv2d", "register_attn", "resize_relative_table",
]
