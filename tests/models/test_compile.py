"""torch.compile of every family: one graph (fullgraph=True, no break) and the eager numbers.

The ``aot_eager`` backend runs Dynamo's capture and AOT Autograd's joint forward/backward graph
without generating kernels, so it checks what inductor needs (a single graph with a traceable
backward) in seconds; ``benchmarks/bench_compile.py`` times the inductor-compiled models.
"""
from __future__ import annotations

import pytest
import torch

from tiny_models import TINY, tiny_model


@pytest.mark.slow
@pytest.mark.parametrize("family", TINY)
def test_compiles_in_one_graph_with_the_eager_outputs_and_gradients(family):
    torch.manual_seed(0)
    model, side = tiny_model(family)
    x = torch.randn(2, 3, side, side)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)

    model.train()
    eager_out = model(x)
    eager_out.square().sum().backward()
    eager_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    out = compiled(x)
    out.square().sum().backward()
    torch.testing.assert_close(out, eager_out, rtol=1e-4, atol=1e-5)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == eager_grads.keys() and grads
    for n, g in grads.items():
        torch.testing.assert_close(g, eager_grads[n], rtol=1e-3, atol=1e-4, msg=lambda m: f"{family} {n}: {m}")
