"""Retrofit attention into an existing CNN, weights kept: ``attach(model, "cbam")`` and ``detach(model)``.

Where the papers put their modules (``where="auto"``):

- SE, ECA and CBAM at the end of every residual branch, after its last layer and before the
  addition (SE paper Fig. 3, ECA Fig. 2, CBAM Fig. 3): ``where="block"``;
- BAM at every bottleneck of the network, the output of the last block before each spatial
  downsampling (BAM paper Fig. 1): ``where="stage"``.

No table of architectures: ``attach`` runs one probe input through the model (in eval mode,
without gradients; on the meta device too) and records the dataflow between module calls and
torch operations. From that record:

- a *residual addition* is a sum of two 4-D maps of one shape where one operand (the branch)
  is computed from the point where the other (the shortcut, identity or projection) leaves
  the trunk, through more operations, at least one with weights and none that upsamples;
- the *end of a branch* is the innermost module, called once, whose output is the branch
  operand, looking back through parameter-free pass-throughs (dropout, stochastic depth in
  eval mode return their input) and single-input, shape-preserving operations (a layer-scale
  product, a functional activation);
- a *stage end* is the output of the last residual block before a block of smaller spatial
  size, taken at the outermost module that returns it (e.g. ``layer1``). In a network without
  residual blocks, it is the input of each spatial downsampling (halving height and width)
  other than that of the input image.

The channel counts come from the probe. The chosen module is replaced in its parent by
:class:`AttachedAttention`, which holds it and the new attention module.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from ._suggest import unknown_name_error
from .layers._base import AttentionLayer
from .layers.create_attn import attn_names, create_attn

PLACEMENT = {"bam": "stage"}  # the papers' placement for where="auto"; every other kind: "block"
_WHERE = ("auto", "block", "stage")
_INITS = ("identity", "default")
_ADDS = frozenset({"add", "add_", "__add__", "__iadd__", "__radd__"})


class AttachedAttention(nn.Module):
    """A module of the host network followed by an attention module ``A``.

        init="default":   out = A(F)
        init="identity":  out = F + γ·(A(F) − F),   γ a learned scalar, γ₀ = 0

    where ``F = module(x)``. At γ = 0 the host network computes exactly what it did before;
    at γ = 1 the block is the paper's. γ is the only parameter that is not the attention's.
    Attributes the wrapper lacks are read from the wrapped module (``bn3.num_features``).

    Keys are ``module.*`` (the wrapped module's), ``attn.*`` and ``gate``. A state_dict saved
    before ``attach`` (the wrapped module's keys without ``module.``) loads too, reporting the
    attention's keys as missing.
    """

    def __init__(self, module: nn.Module, attn: nn.Module, *, kind: str, gate: bool):
        super().__init__()
        self.kind = kind
        self.module = module
        self.attn = attn
        if gate:
            ref = next(attn.parameters(), None)
            self.gate = nn.Parameter(torch.zeros((), device=ref.device if ref is not None else None,
                                                 dtype=ref.dtype if ref is not None else None))
        else:
            self.register_parameter("gate", None)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            # Host code that reads the wrapped module's attributes (``block.bn3.num_features``) keeps working.
            module = self.__dict__.get("_modules", {}).get("module")
            if module is None:
                raise
            return getattr(module, name)

    def forward(self, *args, **kwargs):
        f = self.module(*args, **kwargs)
        a = self.attn(f)
        # Plain arithmetic rather than lerp: under autocast F and A(F) may differ in dtype.
        return a if self.gate is None else f + self.gate * (a - f)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        ours = [k for k in state_dict if k.startswith(prefix)]
        rest = [k[len(prefix):] for k in ours]
        unwrapped = not any(r.startswith("module.") for r in rest)
        if unwrapped and any(not (r.startswith("attn.") or r == "gate") for r in rest):
            for key, r in zip(ours, rest):
                state_dict[f"{prefix}module.{r}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


# -- the probe ---------------------------------------------------------------------------------

@dataclass
class _Op:
    name: str
    inputs: tuple[int, ...]    # values read, in argument order
    outputs: tuple[int, ...]   # values written
    scope: tuple[int, ...]     # module calls open at the time, outermost first
    has_param: bool


@dataclass
class _Call:
    path: str
    module: nn.Module
    inputs: tuple[int, ...]
    outputs: tuple[int, ...] = ()
    tensor_out: bool = False   # returned a single tensor


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


class _Probe(TorchFunctionMode):
    """One forward pass, recorded as values (tensors computed from the input), ops and module calls.

    An in-place op writes a new value into the same tensor; an op that returns its input
    unchanged (dropout in eval mode) writes nothing new.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.paths = {id(m): name for name, m in model.named_modules()}
        self.aliases = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
        self.shapes: list[tuple[int, ...]] = []
        self.producer: list[int | None] = []
        self.ops: list[_Op] = []
        self.calls: list[_Call] = []
        self.left: list[int] = []              # call indices in the order they returned
        self.times_called: Counter = Counter()
        self._stack: list[int] = []
        self._ids = WeakIdKeyDictionary()      # tensor -> (value, tensor version when written)

    def value(self, t: torch.Tensor) -> int | None:
        entry = self._ids.get(t)
        return None if entry is None else entry[0]

    def add_input(self, t: torch.Tensor) -> None:
        self._new(t, None)

    def _new(self, t, producer) -> int:
        v = len(self.shapes)
        self.shapes.append(tuple(t.shape))
        self.producer.append(producer)
        self._ids[t] = (v, t._version)
        return v

    def _values(self, obj) -> tuple[int, ...]:
        return tuple(dict.fromkeys(v for t in _tensors(obj) if (v := self.value(t)) is not None))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        read = self._values((args, kwargs))
        if not read:
            return out
        index, written = len(self.ops), []
        for t in _tensors(out):
            entry = self._ids.get(t)
            written.append(entry[0] if entry is not None and entry[1] == t._version else self._new(t, index))
        if written:
            has_param = any(isinstance(t, nn.Parameter) for t in _tensors((args, kwargs)))
            self.ops.append(_Op(getattr(func, "__name__", str(func)), read, tuple(written), tuple(self._stack),
                                has_param))
        return out

    def enter(self, module, args, kwargs):
        self._stack.append(len(self.calls))
        self.calls.append(_Call(self.paths.get(id(module), "?"), module, self._values((args, kwargs))))
        self.times_called[id(module)] += 1

    def leave(self, module, args, kwargs, output):
        index = self._stack.pop()
        call = self.calls[index]
        call.outputs = self._values(output)
        call.tensor_out = isinstance(output, torch.Tensor)
        self.left.append(index)

    # -- queries --

    def made_by(self, v: int) -> list[_Call]:
        """The calls that returned value ``v``, innermost first, pass-throughs left out."""
        return [self.calls[i] for i in self._made_by.get(v, ())]

    def finish(self) -> None:
        self._made_by: dict[int, list[int]] = {}
        for i in self.left:
            call = self.calls[i]
            if call.tensor_out and call.outputs and call.outputs[0] not in call.inputs:
                self._made_by.setdefault(call.outputs[0], []).append(i)

    def wrappable(self, call: _Call) -> bool:
        return (call.module is not self.model and self.times_called[id(call.module)] == 1
                and self.aliases[id(call.module)] == 1 and call.tensor_out)

    def ancestors(self, v: int) -> set[int]:
        seen, todo = {v}, [v]
        while todo:
            p = self.producer[todo.pop()]
            if p is not None:
                for u in self.ops[p].inputs:
                    if u not in seen:
                        seen.add(u)
                        todo.append(u)
        return seen

    def in_attention(self, scope: tuple[int, ...]) -> bool:
        return any(isinstance(self.calls[i].module, (AttentionLayer, AttachedAttention)) for i in scope)


def _placement_of(*modules: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the first floating-point tensor held by the first of ``modules`` that holds one."""
    for module in modules:
        ref = next((t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()), None)
        if ref is not None:
            return ref.device, ref.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _run_probe(model: nn.Module, input_size) -> tuple[_Probe, tuple[int, ...]]:
    device, dtype = _placement_of(model)
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None)
        c, h, w = tuple(cfg["input_size"]) if isinstance(cfg, dict) and "input_size" in cfg else (3, 224, 224)
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        input_size = (1, conv.in_channels if conv is not None else c, h, w)
    input_size = tuple(input_size)
    if len(input_size) != 4 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_size):
        raise ValueError(f"attach: input_size must be 4 positive integers (B, C, H, W), got {input_size}")
    probe = _Probe(model)
    modes = {m: m.training for m in model.modules()}
    handles = []
    try:
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(probe.enter, with_kwargs=True))
            handles.append(m.register_forward_hook(probe.leave, with_kwargs=True, always_call=True))
        model.eval()
        with torch.inference_mode(False), torch.no_grad():
            x = torch.zeros(input_size, device=device, dtype=dtype)
            probe.add_input(x)
            with probe:
                model(x)
    except Exception as e:
        raise ValueError(f"attach: the probe forward of {type(model).__name__} with a {input_size} input failed "
                         f"({type(e).__name__}: {e}); pass input_size=(B, C, H, W) that the model accepts") from e
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    probe.finish()
    return probe, input_size


# -- where attention goes ----------------------------------------------------------------------

@dataclass
class _Block:
    add: _Op       # the residual addition
    split: int     # the value where branch and shortcut part
    branch: int    # the value the branch adds
    out: int       # the value the block passes on


def _residual_blocks(p: _Probe) -> tuple[list[_Block], int]:
    """The residual additions, in forward order, and the number of 4-D additions looked at."""
    blocks, seen = [], 0
    for op in p.ops:
        if op.name not in _ADDS or len(op.inputs) != 2 or p.in_attention(op.scope):
            continue
        shape = p.shapes[op.outputs[0]]
        a, b = op.inputs
        if len(shape) != 4 or p.shapes[a] != shape or p.shapes[b] != shape:
            continue
        seen += 1
        anc_a, anc_b = p.ancestors(a), p.ancestors(b)
        common = anc_a & anc_b
        if not common:
            continue
        split = max(common)  # values are numbered in creation order: the latest common one
        before = p.ancestors(split)
        # every value but the input has a producer, and the input is an ancestor of ``split``
        ops_a = {i for v in anc_a - before if (i := p.producer[v]) is not None}
        ops_b = {i for v in anc_b - before if (i := p.producer[v]) is not None}
        if len(ops_a) == len(ops_b):
            continue
        branch, ops = (a, ops_a) if len(ops_a) > len(ops_b) else (b, ops_b)
        # A top-down path (FPN: upsample(P5) + lateral(C4)) is not a residual branch.
        if not any(p.ops[i].has_param for i in ops) or any(_upsamples(p, p.ops[i]) for i in ops):
            continue
        holder = p.calls[op.scope[-1]] if op.scope else None
        if holder is not None and holder.module is not p.model and holder.tensor_out and holder.outputs:
            out = holder.outputs[0]
        else:
            out = op.outputs[0]
        blocks.append(_Block(op, split, branch, out))
    return blocks, seen


def _place(p: _Probe, v: int, stop: int | None, *, outermost: bool) -> tuple[_Call | None, str]:
    """The module call to wrap so that attention sees value ``v`` (or the nearest value before it
    through single-input, shape-preserving ops). Returns (call, "") or (None, why not)."""
    shape = p.shapes[v]
    while v != stop:
        calls = [c for c in p.made_by(v) if p.wrappable(c)]
        if calls:
            return (calls[-1] if outermost else calls[0]), ""
        index = p.producer[v]
        if index is None:
            return None, "it is the model's input"
        op = p.ops[index]
        if len(op.inputs) != 1 or p.shapes[op.inputs[0]] != shape:
            return None, f"it is computed by the operation {op.name!r} in {_scope_name(p, op)}, outside any module " \
                         f"that could hold the attention"
        v = op.inputs[0]
    return None, "no module computes it after the branch starts"


def _scope_name(p: _Probe, op: _Op) -> str:
    inner = [p.calls[i].path for i in op.scope if p.calls[i].module is not p.model]
    return repr(inner[-1]) if inner else "the model's own forward"


def _area(shape) -> int:
    return math.prod(shape[2:])


def _resize(before, after) -> int:
    """+1 if a 4-D map grows in both height and width, -1 if it shrinks in both, else 0. Both, so
    that a linear layer on a channels-last (B, H, W, C) map is not taken for a resize."""
    if len(before) != 4 or len(after) != 4 or before[0] != after[0]:
        return 0
    if after[2] > before[2] and after[3] > before[3]:
        return 1
    return -1 if after[2] < before[2] and after[3] < before[3] else 0


def _upsamples(p: _Probe, op: _Op) -> bool:
    """The op enlarges a map: every input map is smaller than an output. Broadcasting a 1×1 map
    (an SE gate times its input) is not upsampling."""
    maps = [p.shapes[u] for u in op.inputs if len(p.shapes[u]) == 4]
    if not maps or any(_area(m) == 1 for m in maps):
        return False
    return any(all(_resize(m, p.shapes[v]) > 0 for m in maps) for v in op.outputs)


def _downsampling_inputs(p: _Probe) -> list[int]:
    """Values entering an op that reduces their spatial size (global pooling to 1×1 excluded)."""
    found = []
    for op in p.ops:
        if p.in_attention(op.scope) or not op.outputs:
            continue
        out = p.shapes[op.outputs[0]]
        for u in op.inputs:
            if _resize(p.shapes[u], out) < 0 and _area(out) > 1 and p.producer[u] is not None and u not in found:
                found.append(u)
    return found


def _describe(p: _Probe, blocks: list[_Block], adds: int, input_size) -> str:
    called = sum(1 for c in p.calls if c.module is not p.model)
    down = [c.path for v in _downsampling_inputs(p) for c in p.made_by(v)[-1:]]
    return (f"the probe forward (input {input_size}) made {called} module calls and {adds} additions of "
            f"two equal-shape 4-D maps, of which {len(blocks)} join a residual branch to its shortcut; it found "
            f"{len(down)} spatial downsamplings after modules {down[:6]}{' …' if len(down) > 6 else ''}")


def _block_targets(p: _Probe, blocks: list[_Block], describe) -> list[_Call]:
    targets = []
    for blk in blocks:
        call, why = _place(p, blk.branch, blk.split, outermost=False)
        if call is None:
            raise ValueError(f"attach: a residual branch added in {_scope_name(p, blk.add)} has no module at its "
                             f"end to hold the attention ({why}). {describe()}. Pass where=[module paths] to "
                             f"choose the modules whose outputs get attention")
        if call not in targets:
            targets.append(call)
    return targets


def _stage_targets(p: _Probe, blocks: list[_Block], describe) -> list[_Call]:
    if blocks:
        ends = [blk.out for blk, nxt in zip(blocks, blocks[1:])
                if _area(p.shapes[nxt.add.outputs[0]]) < _area(p.shapes[blk.add.outputs[0]])]
    else:
        ends = _downsampling_inputs(p)
    if not ends:
        raise ValueError(f"attach: found no stage end (the output of the last block before a spatial "
                         f"downsampling): {describe()}. Pass where=[module paths]")
    targets = []
    for v in ends:
        call, why = _place(p, v, None, outermost=True)
        if call is None:
            raise ValueError(f"attach: a stage ends in a {p.shapes[v]} map that no module returns ({why}). "
                             f"{describe()}. Pass where=[module paths]")
        if call not in targets:
            targets.append(call)
    return targets


def _path_targets(p: _Probe, model: nn.Module, paths) -> list[_Call]:
    names = dict(model.named_modules())
    targets = []
    for path in paths:
        if not isinstance(path, str):
            raise TypeError(f"attach: where must hold module paths (strings), got {path!r}")
        if path == "":
            raise ValueError("attach: where=[''] names the model itself; attention goes after one of its modules")
        if path not in names:
            raise unknown_name_error("attach (where)", path, names)
        calls = [c for c in p.calls if c.module is names[path]]
        if len(calls) != 1:
            raise ValueError(f"attach: module {path!r} ran {len(calls)} times in the probe forward; attention is "
                             f"attached to a module that runs exactly once")
        call = calls[0]
        if not (call.tensor_out and call.outputs and len(p.shapes[call.outputs[0]]) == 4):
            raise ValueError(f"attach: module {path!r} must return one (B, C, H, W) map computed from the input, "
                             f"got {_output_kind(p, call)}")
        if p.aliases[id(call.module)] != 1:
            raise ValueError(f"attach: module {path!r} is registered under more than one name; it cannot be replaced")
        if call not in targets:
            targets.append(call)
    return targets


def _output_kind(p: _Probe, call: _Call) -> str:
    if not call.tensor_out:
        return "a non-tensor (tuple, list or dict)"
    return f"a tensor of shape {p.shapes[call.outputs[0]]}" if call.outputs else "a tensor not computed from the input"


# -- public API --------------------------------------------------------------------------------

def _check_host(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"attach: expected an nn.Module, got {type(model).__name__}")
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        raise ValueError(f"attach: got a {type(model).__name__}; attach to the model before wrapping it "
                         f"(or to its .module, then wrap again)")
    if hasattr(model, "_orig_mod"):
        raise ValueError("attach: got a torch.compile'd model; attach to the model before torch.compile")


def attach(model: nn.Module, kind: str, *, where="auto", init: str = "identity", remove: bool = False,
           input_size=None, **attn_kwargs) -> list[str]:
    """Insert attention modules into ``model`` in place, keeping its weights.

    Args:
        model: any CNN (torchvision, timm, attnvision, your own).
        kind: a :func:`attnvision.create_attn` kind: "se", "eca", "bam", "cbam", ...
        where: "auto" (the paper's placement: "stage" for BAM, "block" otherwise), "block" (end
            of every residual branch, before the addition), "stage" (output of the last block
            before each spatial downsampling), or a list of module paths whose outputs get
            attention (e.g. ``["layer1.0.bn3", "layer4"]``).
        init: "identity" (each inserted module starts as the identity through a scalar gate γ = 0,
            so the model's outputs are unchanged; see :class:`AttachedAttention`) or "default"
            (the attention module as the paper defines it, with its own initialisation).
        remove: remove the inserted modules of ``kind`` instead (same as :func:`detach`).
        input_size: (B, C, H, W) of the probe input (default: the model's ``pretrained_cfg``
            size, else 224×224, with the first convolution's input channels).
        **attn_kwargs: passed to every attention module (e.g. ``reduction=8``).

    Returns:
        The dotted paths of the inserted attention modules (``"layer1.0.bn3.attn"``, ...).
    """
    if remove:
        if where != "auto" or input_size is not None or attn_kwargs:
            raise ValueError("attach: remove=True takes only the model and the kind; where, input_size and "
                             "attention arguments are for inserting")
        return detach(model, kind)
    _check_host(model)
    if not isinstance(kind, str) or kind.lower() not in attn_names():
        raise unknown_name_error("attach (kind)", kind, attn_names())
    kind = kind.lower()
    if init not in _INITS:
        raise ValueError(f"attach: init must be one of {_INITS}, got {init!r}")
    existing = [n for n, m in model.named_modules() if isinstance(m, AttachedAttention)]
    if existing:
        raise ValueError(f"attach: {type(model).__name__} already has attached attention at {existing[:4]}"
                         f"{' …' if len(existing) > 4 else ''}; call attnvision.detach(model) first")
    if isinstance(where, str):
        if where not in _WHERE:
            raise ValueError(f"attach: where must be one of {_WHERE} or a list of module paths, got {where!r}")
    elif not isinstance(where, (list, tuple)) or not where:
        raise TypeError(f"attach: where must be one of {_WHERE} or a non-empty list of module paths, got {where!r}")

    probe, input_size = _run_probe(model, input_size)
    if isinstance(where, str):
        placement = PLACEMENT.get(kind, "block") if where == "auto" else where
        blocks, adds = _residual_blocks(probe)

        def describe():
            return _describe(probe, blocks, adds, input_size)

        if placement == "block":
            if not blocks:
                raise ValueError(f"attach: found no residual block in {type(model).__name__}: {describe()}. Pass "
                                 f"where='stage' for attention before each downsampling, or where=[module paths]")
            targets = _block_targets(probe, blocks, describe)
        else:
            targets = _stage_targets(probe, blocks, describe)
    else:
        targets = _path_targets(probe, model, where)

    wrappers = []
    for call in targets:
        out = probe.shapes[call.outputs[0]]
        device, dtype = _placement_of(call.module, model)
        try:
            with torch.device(device):
                attn = create_attn(kind, out[1], **attn_kwargs)
        except (TypeError, ValueError) as e:
            raise type(e)(f"attach: cannot build {kind!r} for {call.path!r} ({out[1]} channels): {e}") from e
        attn.to(dtype=dtype)
        wrappers.append((call.path, AttachedAttention(call.module, attn, kind=kind, gate=init == "identity")))
    # Deepest first, so that a wrapper never hides the path of a module still to be wrapped.
    for path, wrapper in sorted(wrappers, key=lambda pw: -pw[0].count(".")):
        parent, _, name = path.rpartition(".")
        model.get_submodule(parent).register_module(name, wrapper)
    names = {id(m): n for n, m in model.named_modules()}
    return [f"{names[id(w)]}.attn" for _, w in wrappers]


def detach(model: nn.Module, kind: str | None = None) -> list[str]:
    """Remove what :func:`attach` inserted (only modules of ``kind`` when given), restoring the
    original modules in place. Returns the paths of the removed attention modules."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"detach: expected an nn.Module, got {type(model).__name__}")
    if kind is not None and (not isinstance(kind, str) or kind.lower() not in attn_names()):
        raise unknown_name_error("detach (kind)", kind, attn_names())
    removed: list[str] = []
    while True:
        found = next(((n, m) for n, m in model.named_modules()
                      if isinstance(m, AttachedAttention) and (kind is None or m.kind == kind.lower())), None)
        if found is None:
            return removed
        path, wrapper = found
        parent, _, name = path.rpartition(".")
        model.get_submodule(parent).register_module(name, wrapper.module)
        removed.append(f"{path}.attn")
