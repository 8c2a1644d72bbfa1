"""The interface every attnvision classifier honours (timm's), and model metadata helpers."""
from __future__ import annotations

import math
from typing import Any, Callable, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers._base import tf_variance_scaling_
from ..layers._checks import check_choice, is_tracing
from ..layers.adaptive_pool import POOL_TYPES, SelectAdaptivePool2d
from ..layers.bam import BAM
from ..layers.cbam import CBAMSpatialGate
from ..registry import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def make_cfg(*, paper: str, input_size=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
             crop_pct: float = 0.875, interpolation: str = "bilinear", num_classes: int = 1000,
             fixed_input_size: bool = False, **extra) -> dict:
    """``pretrained_cfg``: preprocessing and provenance (timm's fields; ``num_classes`` is the paper's
    dataset's). ``paper_*`` keys hold the paper's reported numbers. The fields that depend on the built
    model (``pool_size``, ``first_conv``, ``classifier``, ...) are added by :func:`complete_cfg`."""
    return dict(input_size=tuple(input_size), mean=tuple(mean), std=tuple(std), crop_pct=crop_pct,
                interpolation=interpolation, num_classes=num_classes, fixed_input_size=fixed_input_size,
                license="apache-2.0", paper=paper, **extra)


def model_cfg(model: nn.Module) -> dict[str, Any]:
    """The model's ``pretrained_cfg`` (timm's attribute: preprocessing and provenance), the very dict, so that
    changes reach the model; ``{}`` (a new dict, also set on the model) for a module that has none."""
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:
        cfg = {}
        setattr(model, "pretrained_cfg", cfg)
    if not isinstance(cfg, dict):
        raise TypeError(f"{type(model).__name__}.pretrained_cfg: expected a dict, got {type(cfg).__name__}")
    return cfg


def complete_cfg(model: Backbone) -> Backbone:
    """Add the fields of timm's ``pretrained_cfg`` that depend on the built model: ``pool_size`` (the
    final map at ``input_size``), ``first_conv`` (the layer that reads the image), ``classifier``,
    ``min_input_size`` (one pixel in the final map; the input size itself when it is fixed) and
    ``test_input_size``."""
    cfg = model.pretrained_cfg
    _, h, w = cfg["input_size"]
    chans = model.in_chans
    cfg["input_size"] = (chans, h, w)
    r = model.feature_info[-1]["reduction"]
    cfg["pool_size"] = (-(-h // r), -(-w // r))
    cfg["first_conv"] = next(n for n, m in model.named_modules()
                             if isinstance(m, nn.Conv2d) and m.in_channels == chans)
    cfg["classifier"] = model.classifier_path
    cfg["min_input_size"] = (chans, h, w) if cfg["fixed_input_size"] else (chans, r, r)
    cfg.setdefault("test_input_size", (chans, h, w))
    return model


# timm's ``MATCH_PREV_GROUP`` (timm/models/_manipulate.py): a ``group_matcher`` entry whose ordinal ends
# with it joins the group sorted just before it (a stage's final norm or between-stage attention joins
# the stage's last block).
MATCH_PREV = 99999


def stage_attn_matchers(ends) -> list[tuple[str, tuple]]:
    """``group_matcher`` entries putting ``stage_attn.i`` (the attention after stage i) into the group of
    ``ends[i]``, the ordinal of that stage's last entry."""
    return [(rf"^stage_attn\.{i}\.", (end, MATCH_PREV)) for i, end in enumerate(ends)]


def take_indices(model_name: str, num_features: int, indices, arg: str = "indices") -> list[int]:
    """timm's index convention for ``feature_info`` entries: None = all, an int n = the last n, a
    sequence = those entries (negative ones count from the end). Sorted, unique; out of range raises."""
    if indices is None:
        return list(range(num_features))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= num_features:
            raise ValueError(f"{model_name}: {arg}={indices} asks for the last {indices} of its {num_features} "
                             f"feature maps; expected 1..{num_features}")
        return list(range(num_features - indices, num_features))
    try:
        items = list(indices)
    except TypeError:
        raise TypeError(f"{model_name}: {arg} must be None, an int or a sequence of ints, got {indices!r}") from None
    taken = set()
    for i in items:
        if isinstance(i, bool) or not isinstance(i, int) or not -num_features <= i < num_features:
            raise ValueError(f"{model_name}: {arg} must index its {num_features} feature maps "
                             f"(-{num_features}..{num_features - 1}), got {tuple(items)}")
        taken.add(i % num_features)
    if not taken:
        raise ValueError(f"{model_name}: {arg} is empty; give None for every feature map")
    return sorted(taken)


class Backbone(nn.Module):
    """The timm interface: ``forward = forward_head ∘ forward_features``.

    Subclasses set ``num_classes``, ``num_features``, ``feature_info``, ``pretrained_cfg``,
    implement ``forward_features``, ``forward_head`` and ``_stage_outputs(x)`` (a generator of the
    state after each ``feature_info`` entry), keep stages with ``_keep_stages(n)``, and name their
    classifier's attribute path in ``classifier_path``. Models with a norm after the last stage
    return it from ``final_norm_module``.
    """

    classifier_path = "head.fc"
    pool_types: tuple[str, ...] = POOL_TYPES  # the ``global_pool`` options of the family's head
    drop_rate: float = 0.0
    grad_checkpointing: bool = False
    num_classes: int
    num_features: int
    in_chans: int
    pretrained_cfg: dict
    feature_info: list
    # the head's pooling: the module the default head below reads; families that name theirs otherwise (ViTs
    # by a string, as timm's) override every method here that reads it
    global_pool: SelectAdaptivePool2d | str

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__}: forward_features is not implemented")

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pool (``self.global_pool``, average by default) → dropout (``self.drop_rate``) → the
        classifier; families with another head override it."""
        x = cast(SelectAdaptivePool2d, self.global_pool)(x)
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.get_classifier()(x)

    def make_pool(self, global_pool: str, num_classes: int) -> SelectAdaptivePool2d:
        """The head's pooling, checked against the family's options; ``''`` (no pooling: ``forward_head``
        returns the feature map) leaves nothing a classifier could read, so it needs ``num_classes=0``."""
        name = type(self).__name__
        check_choice(name, "global_pool", global_pool, self.pool_types)
        if global_pool == "" and num_classes:
            raise ValueError(f"{name}: global_pool='' keeps the unpooled feature map, which a classifier cannot "
                             f"read; expected num_classes=0, got {num_classes}")
        return SelectAdaptivePool2d(global_pool, module=name)

    @property
    def pool_type(self) -> str:
        """The ``global_pool`` option in use."""
        return cast(SelectAdaptivePool2d, self.global_pool).pool_type

    def _set_global_pool(self, global_pool: str, num_classes: int) -> None:
        self.global_pool = self.make_pool(global_pool, num_classes)

    @property
    def head_hidden_size(self) -> int:
        """Width of ``forward_head(x, pre_logits=True)``: ``num_features``, twice it with ``catavgmax``."""
        return self.num_features * cast(SelectAdaptivePool2d, self.global_pool).feat_mult()

    @property
    def default_cfg(self) -> dict:
        """timm's older name of ``pretrained_cfg`` (the same dict)."""
        return self.pretrained_cfg

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.classifier_path)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (0: none, ``forward`` gives the pooled features) reading the
        pooling ``global_pool`` (None: the current one, but for a classifier after no pooling, ``''``, which
        leaves nothing it can read: the family's default pooling, ``pool_types[0]``). The new layers are made
        on the model's device, in its dtype and its training mode."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"{type(self).__name__}: num_classes must be a non-negative integer, got {num_classes!r}")
        pool = self.pool_type if global_pool is None else global_pool
        if global_pool is None and pool == "" and num_classes > 0:
            pool = self.pool_types[0]
        before = set(self.modules())  # the modules themselves, alive: ids of freed ones are reused
        self._set_global_pool(pool, num_classes)
        parent_path, _, attr = self.classifier_path.rpartition(".")
        parent = self.get_submodule(parent_path) if parent_path else self
        ref = next(self.parameters())  # also after a reset to 0 classes left no classifier weight
        new = (nn.Linear(self.head_hidden_size, num_classes, device=ref.device, dtype=ref.dtype) if num_classes > 0
               else nn.Identity())
        setattr(parent, attr, new)
        self.num_classes = num_classes
        for m in self.modules():
            if m not in before:
                m.train(self.training)

    # -- training helpers (timm's names) ----------------------------------------------------------

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage (each block for ViTs) in the backward pass instead of keeping its
        activations: lower peak memory in training, the same outputs and gradients."""
        self.grad_checkpointing = bool(enable)

    def _stage_outputs(self, x):
        """The output of each of ``self.stages`` in turn, after ``self.forward_stem(x)``; families whose
        stages are not a plain chain override it."""
        x = getattr(self, "forward_stem")(x)
        for stage in cast(nn.Sequential, self.stages):
            x = self._run(stage, x)
            yield x

    def _run(self, module, *args):
        """``module(*args)``, under activation checkpointing when it is on and gradients are recorded."""
        if self.grad_checkpointing and torch.is_grad_enabled() and not is_tracing():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter grouping (used by its layer-wise learning-rate decay,
        ``timm.optim.param_groups_layer_decay``): ``stem`` and ``blocks`` regexes whose captured numbers
        order the groups, one group per block (per stage when ``coarse``) in forward order; parameters
        matching neither (the head) form the last group."""
        raise NotImplementedError(f"{type(self).__name__}: group_matcher is not implemented")

    def no_weight_decay(self) -> set[str]:
        """Names of parameters to train without weight decay (timm's convention: position
        embeddings, class tokens, relative position tables, layer scales)."""
        keys = ("pos_embed", "cls_token", "relative_bias_table", "rel_height", "rel_width", "rel_row",
                "rel_col", "gamma")
        return {n for n, _ in self.named_parameters() if n.rpartition(".")[2] in keys}

    # -- intermediate features (timm's forward_intermediates contract) --------------------------

    def final_norm_module(self) -> nn.Module | None:
        """The norm ``forward_features`` applies after the last stage (None: there is none)."""
        return None

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.final_norm_module()
        return x if norm is None else norm(x)

    def _feature_map(self, index: int, x: torch.Tensor, norm: bool) -> torch.Tensor:
        """The NCHW map of entry ``index`` from the stage state ``x``; ``norm`` applies the final norm
        to the last stage's map, the one it normalises."""
        return self._final_norm(x) if norm and index == len(self.feature_info) - 1 else x

    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """The maps of ``feature_info`` entries ``indices`` (None: all; an int n: the last n; negative
        indices count from the end) as NCHW tensors.

        Returns ``(final, intermediates)``, ``final`` being ``forward_features(x)`` (with ``stop_early``:
        the state at the last index taken, the stages after it skipped, normed where the final norm
        fits it), or the list alone when ``intermediates_only``. Bad indices raise before anything runs.
        """
        name = type(self).__name__
        if output_fmt != "NCHW":
            raise ValueError(f"{name}: output_fmt must be 'NCHW', got {output_fmt!r}")
        take = take_indices(name, len(self.feature_info), indices)
        feats, last = [], take[-1]
        for i, x in enumerate(self._stage_outputs(x)):
            if i in take:
                feats.append(self._feature_map(i, x, norm))
            if i == last and (stop_early or intermediates_only):
                break
        if intermediates_only:
            return feats
        return self._final(i, x), feats

    def _final(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self._final_norm(x) if index == len(self.feature_info) - 1 else x

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """Drop every stage after the last of ``indices`` (timm's convention, see ``forward_intermediates``),
        the final norm when ``prune_norm`` and the head when ``prune_head``; returns the indices kept."""
        take = take_indices(type(self).__name__, len(self.feature_info), indices)
        keep = take[-1] + 1
        if keep < len(self.feature_info):
            self._keep_stages(keep)
            self.feature_info = self.feature_info[:keep]
            prune_norm = True  # the final norm was made for the last stage, which is gone
        if prune_norm and self.final_norm_module() is not None:
            self._drop_final_norm()
        if prune_head:
            self._drop_head()
        return take

    def _keep_stages(self, n: int) -> None:
        raise NotImplementedError(f"{type(self).__name__}: pruning stages is not implemented")

    def _drop_final_norm(self) -> None:
        raise NotImplementedError(f"{type(self).__name__}: pruning the final norm is not implemented")

    def _drop_head(self) -> None:
        """Remove the classifier and any head layers before it; the head is then a plain pool."""
        self.num_features = self.feature_info[-1]["num_chs"]
        self.reset_classifier(0)


INIT_SCHEMES = ("authors", "torchvision")
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _zero_biases(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        if name.rpartition(".")[2] == "bias":
            nn.init.zeros_(p)


def check_init(model_name: str, init: str, schemes=INIT_SCHEMES) -> str:
    if init not in schemes:
        raise ValueError(f"{model_name}: init must be one of {tuple(schemes)}, got {init!r}")
    return init


def init_torchvision_cnn(model: nn.Module) -> None:
    """torchvision's ResNet initialisation (``torchvision/models/resnet.py``, ``ResNet.__init__``):
    He-normal on fan-out for every 2-D convolution, BatchNorm weight 1 and bias 0; linear layers,
    1-D convolutions and convolution biases keep PyTorch's defaults.

    The authors of ECA-Net do the same (BangguWu/ECANet ``models/eca_resnet.py``, ``ResNet.__init__``:
    N(0, √(2/(k·k·C_out))) for every ``nn.Conv2d``, BN 1 and 0; the ECA ``Conv1d`` and the classifier
    untouched); the SE authors' released networks are Caffe models without an initialiser, and
    SE-ResNets are trained from this one (torchvision, timm)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, _BATCH_NORMS):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_attention_module_cnn(model: nn.Module, classifier: nn.Module | None) -> None:
    """The initialisation of the BAM and CBAM authors' ResNets (Jongchan/attention-module
    ``MODELS/model_resnet.py``, ``ResNet.__init__``), which sets the entries of the state_dict by
    their key names:

    - a weight whose key holds "conv": He-normal on fan-out. That is every convolution, the
      one-output-channel CBAM 7×7 and BAM final 1×1 included (fan-out 49 and 1), except the
      shortcut projections: their key is ``downsample.0.weight``, so they keep PyTorch's default;
    - a weight whose key holds "bn": 1, except CBAM's spatial-gate BN (key ``SpatialGate...bn``): 0,
      so that M_s starts as the constant σ(0) = 0.5. The same 0 goes to the BNs that end the
      branches of the paper's BAM (:meth:`~attnvision.layers.BAM.gate_norms`, absent from the
      released code), so that its gate starts as σ(0) = 0.5 too;
    - every bias: 0 (convolutions, linear layers and BNs);
    - the classifier's weight: He-normal on fan-in (``init.kaiming_normal(self.fc.weight)``). The
      linear layers of the attention MLPs keep PyTorch's default weights.
    """

    shortcut = {id(m) for name, sub in model.named_modules() if name.rpartition(".")[2] == "downsample"
                for m in sub.modules()}
    spatial_bns = {id(m.bn) for m in model.modules() if isinstance(m, CBAMSpatialGate)}
    spatial_bns |= {id(bn) for m in model.modules() if isinstance(m, BAM) for bn in m.gate_norms()}
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in shortcut:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, _BATCH_NORMS):
            nn.init.constant_(m.weight, 0.0 if id(m) in spatial_bns else 1.0)
    _zero_biases(model)
    if isinstance(classifier, nn.Linear):
        nn.init.kaiming_normal_(classifier.weight, mode="fan_in", nonlinearity="relu")


def init_tf_resnet(model: nn.Module, classifier: nn.Module) -> None:
    """The initialisation of the TensorFlow ResNet the evolving-attention authors augment
    (pkuyym/EvolvingAttention ``EAResnet50/official/resnet/resnet_model.py``): every convolution by
    ``tf.variance_scaling_initializer()`` (fan-in, scale 1, truncated normal), every bias 0,
    BatchNorm 1 and 0, and the classifier by ``tf.layers.dense``'s default, Glorot-uniform."""

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            tf_variance_scaling_(m.weight)
        elif isinstance(m, _BATCH_NORMS):
            nn.init.ones_(m.weight)
    _zero_biases(model)
    if isinstance(classifier, nn.Linear):
        nn.init.xavier_uniform_(classifier.weight)


def init_normal_002(model: nn.Module) -> None:
    """Every kernel N(0, 0.02) — convolutions, linear layers and relative-position bias tables — and
    every bias 0: the CoAtNet reference code (google-research/maxvit ``maxvit/models/maxvit.py``,
    ``kernel_initializer=tf.random_normal_initializer(stddev=0.02)``, ``bias_initializer=tf.zeros_initializer``,
    ``relative_bias`` made with the same kernel initializer, ``cls_bias_init=0``). Norms keep 1 and 0."""
    for name, p in model.named_parameters():
        leaf = name.rpartition(".")[2]
        if (leaf == "weight" and p.dim() > 1) or leaf == "relative_bias_table":
            nn.init.normal_(p, 0.0, 0.02)
    _zero_biases(model)


def init_fan_out_trunc_normal(m: nn.Module) -> None:
    """He-normal on fan-out for convolutions, truncated normal (std 0.02) for linear layers, zero
    biases: the initialisation of the authors' VAN (Visual-Attention-Network/VAN-Classification
    ``models/van.py``, ``VAN._init_weights``); CoAtNet's ``init="fan_out"``. Use with ``model.apply``."""
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def keep_layers(model: nn.Module, n: int) -> None:
    """Keep the first ``n`` of a model's ``layer1``, ``layer2``, ... stages (ResNet-style naming)."""
    for i in range(n, getattr(model, "num_stages")):
        delattr(model, f"layer{i + 1}")
    setattr(model, "num_stages", n)


def stage_info(channels, reductions, module_fmt: str) -> list[dict]:
    """``feature_info`` entries for stages of the given widths and strides."""
    return [dict(num_chs=c, reduction=r, module=module_fmt.format(i + 1))
            for i, (c, r) in enumerate(zip(channels, reductions))]


def check_image(model_name: str, x: torch.Tensor, in_chans: int) -> None:
    """Raise unless ``x`` is a (B, in_chans, H, W) tensor; nothing while tracing (see ``is_tracing``)."""
    if is_tracing():
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model_name}: expected an image tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"{model_name}: expected input of shape (B, {in_chans}, H, W), got {tuple(x.shape)}")


def register_variant(name: str, build: Callable[..., Backbone], doc: str):
    """Register ``name`` as a builder
    ``(*, num_classes, in_chans, **kwargs) -> build(num_classes, in_chans, **kwargs)``."""

    def builder(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> nn.Module:
        model = complete_cfg(build(num_classes, in_chans, **kwargs))
        # what rebuilds it (save_pretrained writes them into config.json): timm's field name, the builder's kwargs
        model.pretrained_cfg["architecture"] = name
        setattr(model, "model_kwargs", dict(kwargs))
        return model

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    return register_model(builder)
