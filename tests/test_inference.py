"""optimize_for_inference: the eager outputs for every family, BatchNorm folded only where it is exact."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import attnvision as av
from attnvision.inference import FrozenCompiled, fold_batchnorm

sys.path.insert(0, str(Path(__file__).parent / "models"))
from tiny_models import TINY, tiny_model  # noqa: E402


def _batchnorms(model):
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _random_statistics(model):
    """BN layers far from the identity, so that folding them is really tested."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    return model


@pytest.mark.parametrize("family", TINY)
def test_every_family_gives_the_eager_outputs(family):
    model, side = tiny_model(family)
    _random_statistics(model)
    before = _batchnorms(model)
    x = torch.randn(2, 3, side, side)
    fast = av.optimize_for_inference(model)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)
    assert _batchnorms(model) == before  # the given model is untouched
    assert type(fast) is type(model)
    if before:
        assert len(_batchnorms(fast)) < len(before)
    convs = [m for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)


def test_resnet_with_cbam_folds_every_batchnorm_including_the_spatial_gates():
    model, side = tiny_model("resnet_cbam")
    pairs = fold_batchnorm(_random_statistics(model))
    assert _batchnorms(model) == []
    assert ("layer1.0.attn.spatial.conv", "layer1.0.attn.spatial.bn") in pairs
    assert ("layer1.0.downsample.0", "layer1.0.downsample.1") in pairs
    assert isinstance(model.layer1[0].attn.spatial.bn, nn.Identity)


def test_bam_keeps_the_batchnorm_after_its_linear_layers():
    model, _ = tiny_model("resnet_bam")
    fold_batchnorm(model)
    assert _batchnorms(model) and all(isinstance(model.get_submodule(n), nn.BatchNorm1d) for n in _batchnorms(model))


class _Shared(nn.Module):
    """A conv whose output a BN and a residual both read, and a conv+BN pair called twice."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        x = self.bn(y) + y
        return self.bn2(self.conv2(self.bn2(self.conv2(x))))


def test_a_conv_output_read_twice_or_a_module_called_twice_is_not_folded():
    model = _random_statistics(_Shared()).eval()
    x = torch.randn(2, 3, 8, 8)
    assert fold_batchnorm(model) == []
    fast = av.optimize_for_inference(model)
    torch.testing.assert_close(fast(x), model(x))


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = -x
        return self.bn(self.conv(x))


def test_an_untraceable_model_keeps_its_batchnorm_and_says_why():
    model = _random_statistics(_Untraceable()).eval()
    with pytest.warns(UserWarning, match=r"optimize_for_inference: _Untraceable cannot be traced by torch.fx .*"
                                         r"not folded"):
        fast = av.optimize_for_inference(model, channels_last=False)
    assert _batchnorms(fast) == ["bn"]
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fast(x), model(x))


def test_compile_wraps_the_folded_model():
    model, side = tiny_model("resnet_cbam")
    _random_statistics(model)
    fast = av.optimize_for_inference(model, compile=dict(backend="eager", fullgraph=True))
    assert isinstance(fast, torch._dynamo.eval_frame.OptimizedModule) and _batchnorms(fast._orig_mod) == []
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)


def test_compile_true_traces_and_compiles_with_freezing_on(monkeypatch):
    import torch._inductor.config as inductor_config

    calls = []

    class Compiled(nn.Module):  # as OptimizedModule: calls the model, reads attributes through to it
        def __init__(self, model):
            super().__init__()
            self._orig_mod = model

        def forward(self, x):
            calls.append(inductor_config.freezing)  # the flag while the compiled code is called
            return self._orig_mod(x)

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self._orig_mod, name)

    def fake_compile(model, **kwargs):
        calls.append(kwargs)
        return Compiled(model)

    monkeypatch.setattr(torch, "compile", fake_compile)
    model, side = tiny_model("resnet_cbam")
    fast = av.optimize_for_inference(model, compile=True)
    assert isinstance(fast, FrozenCompiled) and calls == [{}]
    with torch.no_grad():
        fast(torch.randn(1, 3, side, side))
    assert calls == [{}, True] and inductor_config.freezing is False  # on during the call only
    assert fast.num_classes == model.num_classes  # attributes read through the wrapper
    assert isinstance(copy.deepcopy(fast), FrozenCompiled)
    av.optimize_for_inference(model, compile={"mode": "max-autotune"})
    assert calls[-1] == {"mode": "max-autotune"}  # a dict is passed as it is


@pytest.mark.slow
def test_compile_true_freezes_the_weights_into_inductor_code():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1)).eval()
    fast = av.optimize_for_inference(model, compile=True)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        y = fast(x)
        torch.testing.assert_close(y, model(x), rtol=1e-4, atol=1e-5)
        fast.compiled._orig_mod[3].weight.add_(1.0)  # the copy's parameter: frozen weights do not see it
        torch.testing.assert_close(fast(x), y, rtol=0, atol=0)


def test_training_mode_and_bad_arguments_are_refused():
    model, _ = tiny_model("resnet_cbam")
    with pytest.raises(ValueError, match=r"optimize_for_inference: the model must be in eval mode \(call model.eval"
                                         r"\(\) first\); \d+ module\(s\) are in training mode, e.g. 'ResNet'"):
        av.optimize_for_inference(model.train())
    model.eval().layer1[0].bn1.train()
    with pytest.raises(ValueError, match=r"1 module\(s\) are in training mode, e.g. 'layer1.0.bn1'"):
        fold_batchnorm(model)
    model.eval()
    with pytest.raises(TypeError, match="optimize_for_inference: expected an nn.Module, got function"):
        av.optimize_for_inference(lambda x: x)
    with pytest.raises(TypeError, match="channels_last must be True or False, got 'yes'"):
        av.optimize_for_inference(model, channels_last="yes")
    with pytest.raises(TypeError, match="compile must be True, False or a dict of torch.compile arguments, got str"):
        av.optimize_for_inference(model, compile="inductor")


def test_a_torchvision_model_is_folded_too():
    model = _random_statistics(av.create_model("torchvision:resnet18", num_classes=5)).eval()
    fast = av.optimize_for_inference(model)
    assert _batchnorms(fast) == []
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)
