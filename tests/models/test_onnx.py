"""ONNX: every family exports with the default ``torch.onnx.export`` exporter (a dynamic batch) and
onnxruntime gives the eager outputs at another batch size. SASA's custom operator is exported as its
decomposition into standard operators."""
from __future__ import annotations

import onnxruntime
import pytest
import torch
from torch.export import Dim
from tiny_models import TINY, tiny_model

from attnvision.layers.local_attention import local_attention, local_attention_decomposed


@pytest.mark.slow
@pytest.mark.parametrize("family", TINY)
def test_onnx_export_runs_in_onnxruntime_with_the_eager_outputs(family):
    model, side = tiny_model(family)
    program = torch.onnx.export(model, (torch.randn(2, 3, side, side),), dynamo=True, optimize=False,
                                dynamic_shapes={"x": {0: Dim("batch", min=1, max=16)}})
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, side, side)
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-4, atol=1e-4)


def test_local_attention_decomposition_equals_the_custom_operator():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 9, 11, 4, dtype=torch.float64) for _ in range(3))
    for ks in (3, 7):
        rows, cols = (torch.randn(2, 2, 9, 11, ks, dtype=torch.float64) for _ in range(2))
        torch.testing.assert_close(local_attention_decomposed(q, k, v, ks, rows, cols),
                                   local_attention(q, k, v, ks, rows, cols))
        torch.testing.assert_close(local_attention_decomposed(q, k, v, ks), local_attention(q, k, v, ks))


def test_exported_sasa_holds_no_custom_operator():
    model, side = tiny_model("sasa")
    program = torch.export.export(model, (torch.randn(1, 3, side, side),))
    assert not [n for n in program.graph.nodes if "attnvision" in str(n.target)]
