"""Weights: reading files (:mod:`.files`), key maps (:mod:`.keymaps`) and loading into a model (:mod:`.load`).

This layer sits between the attention layers and the model families: the families' converters use its
key maps, and ``create_model(pretrained=...)`` loads through it.
"""
from .files import hf_weights_file, read_state_dict, torch_load
from .keymaps import remap_keys
from .load import LoadReport, attention_prefixes, load_checkpoint

__all__ = ["LoadReport", "attention_prefixes", "hf_weights_file", "load_checkpoint", "read_state_dict",
           "remap_keys", "torch_load"]
