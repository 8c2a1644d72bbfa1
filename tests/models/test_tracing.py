"""Input checks step aside under tracing: torch.fx, torchvision's feature extractor, torch.jit.trace and
torch.export (dynamic batch and H/W) give the eager outputs; eager calls keep their errors."""
from __future__ import annotations

import pytest
import torch
from torch.export import Dim
from torchvision.models.feature_extraction import create_feature_extractor

import attnvision as av
from attnvision.layers._checks import is_tracing
from attnvision.layers.evolving_attention import evolving_attention

from tiny_models import CNN_FAMILIES, TINY, tiny_model


def _input(side, batch=2):
    return torch.randn(batch, 3, side, side)


@pytest.mark.parametrize("name", av.list_models())
def test_every_registered_model_traces_with_fx(name):
    with torch.device("meta"):  # no weights or arithmetic: the structure alone is traced and run
        model = av.create_model(name, num_classes=7).eval()
        graph = torch.fx.symbolic_trace(model)
        size = model.pretrained_cfg["input_size"][1:] if model.pretrained_cfg.get("fixed_input_size") else (64, 64)
        assert graph(torch.zeros(2, 3, *size)).shape == (2, 7)


@pytest.mark.parametrize("family", TINY)
def test_fx_graph_and_feature_extractor_give_the_eager_outputs(family):
    model, side = tiny_model(family)
    x = _input(side)
    torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x))
    nodes = {info["module"]: f"f{i}" for i, info in enumerate(model.feature_info)}
    feats = create_feature_extractor(model, return_nodes=nodes)(x)
    _, eager = model.forward_intermediates(x)
    assert len(feats) == len(eager) == len(model.feature_info)
    if "vit" not in family:  # ViT's blocks give tokens; forward_intermediates turns them into maps
        for got, want in zip(feats.values(), eager):
            torch.testing.assert_close(got, want)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace is deprecated; it still has to work
@pytest.mark.parametrize("family", TINY)
def test_jit_trace_gives_the_eager_outputs(family):
    model, side = tiny_model(family)
    x = _input(side)
    traced = torch.jit.trace(model, x, check_trace=False)
    torch.testing.assert_close(traced(x), model(x))


@pytest.mark.parametrize("family", CNN_FAMILIES)
def test_export_with_dynamic_batch_and_size_matches_eager_at_other_shapes(family):
    model, side = tiny_model(family)
    # AA layers' relative tables cover maps up to the img_size they were built for: smaller inputs only.
    most = side // 32 if family.startswith("ea_aa") else 8
    dims = {0: Dim("batch", min=1, max=16), 2: 32 * Dim("h", min=2, max=most), 3: 32 * Dim("w", min=2, max=most)}
    program = torch.export.export(model, (_input(side),), dynamic_shapes={"x": dims})
    x = torch.randn(3, 3, side if family.startswith("ea_aa") else 96, 64)
    torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-4)


def test_export_of_the_vit_has_a_dynamic_batch():
    model, side = tiny_model("ea_vit")
    program = torch.export.export(model, (_input(side),), dynamic_shapes={"x": {0: Dim("batch", min=1, max=16)}})
    x = _input(side, batch=5)
    torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-4)


def test_export_of_the_dynamic_size_vit_has_a_dynamic_batch_and_size():
    model, side = tiny_model("ea_vit", dynamic_img_size=True)
    dims = {0: Dim("batch", min=1, max=8), 2: 8 * Dim("h", min=2, max=8), 3: 8 * Dim("w", min=2, max=8)}
    program = torch.export.export(model, (_input(side),), dynamic_shapes={"x": dims})
    x = torch.randn(3, 3, 48, 24)  # another grid: the position embedding is resampled inside the graph
    torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-4)


def test_eager_calls_keep_their_input_errors():
    assert not is_tracing()
    model, side = tiny_model("van")
    with pytest.raises(ValueError, match=r"VAN: expected input of shape \(B, 3, H, W\), got \(2, 4, 64, 64\)"):
        model(torch.randn(2, 4, side, side))
    with pytest.raises(TypeError, match="VAN: expected an image tensor, got list"):
        model([1, 2])
    vit, side = tiny_model("ea_vit")
    with pytest.raises(ValueError, match="VisionTransformer: built for 32×32 inputs, got 48×48"):
        vit(torch.randn(1, 3, 48, 48))


@pytest.mark.parametrize("train", [False, True])
def test_fx_graph_of_the_ea_vit_computes_the_eager_bits(train):
    # eager continues the chain through the fused evolving function: the traced graph must call that same
    # function (a leaf of the graph), not record the op-by-op equations, whose float rounding differs
    model = av.create_model("ea_vit_tiny", img_size=32, num_classes=5).train(train)
    graph = torch.fx.symbolic_trace(model)
    leaves = [n for n in graph.graph.nodes if n.op == "call_function" and n.target is evolving_attention]
    assert len(leaves) == len(model.blocks) - 1  # every block but the chain's first continues it
    x = _input(32)
    with torch.no_grad():
        assert torch.equal(graph(x), model(x))
