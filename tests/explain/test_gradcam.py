"""Grad-CAM / Grad-CAM++: hand-computed values, layer="auto" on every family, token outputs."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnvision as av
from attnvision.explain import gradcam, resolve_layer
from attnvision.explain._grid import token_grid


class TinyCNN(nn.Module):
    """x → 1×1 conv (weights +1, −1) → ReLU ("stage") → global average pool → Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.stage = nn.ReLU()
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[2.0, 3.0], [1.0, -4.0]]))
            self.fc.bias.copy_(torch.tensor([0.5, 0.0]))
        self.feature_info = [dict(num_chs=2, reduction=1, module="stage")]

    def forward(self, x):
        return self.fc(self.stage(self.conv(x)).mean((2, 3)))


# x = [[1, -2], [3, 0]] gives A0 = ReLU(x) = [[1, 0], [3, 0]] and A1 = ReLU(-x) = [[0, 2], [0, 0]];
# logits: y0 = 2·mean(A0) + 3·mean(A1) + 0.5 = 4, y1 = 1·1 − 4·0.5 = −1. Since the head is a
# mean over the 4 pixels, ∂y_c/∂A_k = W[c, k] / 4 at every pixel.
X = torch.tensor([[1.0, -2.0], [3.0, 0.0]]).view(1, 1, 2, 2)
A0 = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
A1 = torch.tensor([[0.0, 2.0], [0.0, 0.0]])


def test_gradcam_equals_hand_computation_for_top_class():
    # class 0: α = (2/4, 3/4); L = ReLU(0.5·A0 + 0.75·A1) = [[0.5, 1.5], [1.5, 0]]
    raw = gradcam(TinyCNN(), X, normalize=False)
    torch.testing.assert_close(raw[0], torch.tensor([[0.5, 1.5], [1.5, 0.0]]))
    normalised = gradcam(TinyCNN(), X)
    torch.testing.assert_close(normalised[0], torch.tensor([[1 / 3, 1.0], [1.0, 0.0]]))


def test_gradcam_equals_hand_computation_for_chosen_class():
    # class 1: α = (1/4, −4/4); L = ReLU(0.25·A0 − A1) = [[0.25, 0], [0.75, 0]]
    raw = gradcam(TinyCNN(), X, target=1, normalize=False)
    torch.testing.assert_close(raw[0], torch.tensor([[0.25, 0.0], [0.75, 0.0]]))


def test_gradcam_plus_plus_equals_hand_computation():
    # class 0, g = (1/2, 3/4), ΣA = (4, 2):
    #   a0 = g²/(2g² + 4g³) = 0.25/(0.5 + 0.5) = 1/4,        w0 = 4 pixels · 1/4 · 1/2 = 1/2
    #   a1 = 0.5625/(1.125 + 2·0.421875) = 2/7,              w1 = 4 · 2/7 · 3/4 = 6/7
    expected = F.relu(0.5 * A0 + 6 / 7 * A1)
    raw = gradcam(TinyCNN(), X, method="gradcam++", normalize=False)
    torch.testing.assert_close(raw[0], expected)
    # class 1, g = (1/4, −1): a0 = (1/16)/(2/16 + 4/64) = 1/3, w0 = 4 · 1/3 · 1/4 = 1/3; ReLU(g1) = 0 so w1 = 0
    raw = gradcam(TinyCNN(), X, target=1, method="gradcam++", normalize=False)
    torch.testing.assert_close(raw[0], A0 / 3)


def test_gradcam_per_image_targets_and_batch():
    x = torch.cat([X, X])
    cams = gradcam(TinyCNN(), x, target=[0, 1], normalize=False)
    torch.testing.assert_close(cams[0], torch.tensor([[0.5, 1.5], [1.5, 0.0]]))
    torch.testing.assert_close(cams[1], torch.tensor([[0.25, 0.0], [0.75, 0.0]]))


def test_gradcam_leaves_model_state_and_parameter_gradients_untouched():
    model = TinyCNN().train()
    model.fc.eval()
    gradcam(model, X)
    assert model.training and model.stage.training and not model.fc.training
    assert all(p.grad is None for p in model.parameters())


def test_gradcam_rejects_bad_targets_layers_and_images():
    model = TinyCNN()
    with pytest.raises(ValueError, match=r"target classes must lie in \[0, 2\)"):
        gradcam(model, X, target=5)
    with pytest.raises(ValueError, match="one per image"):
        gradcam(model, X, target=[0, 1])
    with pytest.raises(ValueError, match="unknown name 'stag'.*'stage'"):
        gradcam(model, X, layer="stag")
    with pytest.raises(ValueError, match="method must be one of"):
        gradcam(model, X, method="cam")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        gradcam(model, X[0])
    with torch.inference_mode(), pytest.raises(RuntimeError, match="outside torch.inference_mode"):
        gradcam(model, X)
    del model.feature_info
    with pytest.raises(ValueError, match="no feature_info"):
        gradcam(model, X)


def _one_per_family():
    """The smallest-numbered variant of every name prefix (resnet, preresnet, van_b, coatnet_, vit_tiny …)."""
    best = {}
    for name in av.list_models():
        prefix = re.match(r"\D*", name).group(0)
        numbers = [int(n) for n in re.findall(r"\d+", name)]
        key = (numbers[:1] or [0], len(name))
        if prefix not in best or key < best[prefix][0]:
            best[prefix] = (key, name)
    return sorted(name for _, name in best.values())


@pytest.mark.parametrize("name", _one_per_family())
def test_auto_layer_gives_input_sized_maps_for_every_family(name):
    try:  # families whose position embedding fixes the input size take img_size
        model, size = av.create_model(name, num_classes=5, img_size=32), 32
    except TypeError:
        model, size = av.create_model(name, num_classes=5), 16
    x = torch.randn(2, 3, size, size)
    layer, _ = resolve_layer(model)
    assert layer == model.feature_info[-1]["module"]
    cams = gradcam(model, x, method="gradcam++")
    assert cams.shape == (2, size, size)
    assert torch.isfinite(cams).all() and cams.min() >= 0
    peaks = cams.amax((1, 2))
    assert all(p == 1 or p == 0 for p in peaks.tolist())


class ToyViT(nn.Module):
    """Patch embedding (stride 4) + class token + one self-attention block; classifies the class
    token (``pool="cls"``) or the mean of all tokens (``pool="mean"``)."""

    def __init__(self, pool, dim=8, heads=2, classes=3):
        super().__init__()
        self.pool = pool
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.blocks = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, classes)
        self.feature_info = [dict(num_chs=dim, reduction=4, module="blocks")]

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)                  # (B, h·w, C)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1)    # (B, 1 + h·w, C)
        t = self.blocks(t)
        return self.head(t[:, 0] if self.pool == "cls" else t.mean(1))


def _manual_token_cam(model, x, use_input):
    """Grad-CAM by hand on the 4×6 token grid of a 16×24 image, from the block's output or input."""
    store = {}
    if use_input:
        handle = model.blocks.register_forward_pre_hook(lambda m, a: store.update(t=a[0]))
    else:
        handle = model.blocks.register_forward_hook(lambda m, a, out: store.update(t=out))
    x = x.clone().requires_grad_(True)  # so the hooked tensor is part of the graph
    logits = model(x)
    handle.remove()
    (grad,) = torch.autograd.grad(logits.gather(1, logits.argmax(1)[:, None]).sum(), store["t"])
    act = store["t"][:, 1:].detach().reshape(2, 4, 6, 8).permute(0, 3, 1, 2)
    g = grad[:, 1:].reshape(2, 4, 6, 8).permute(0, 3, 1, 2)
    cam = F.relu((g.mean((2, 3))[:, :, None, None] * act).sum(1))
    return F.interpolate(cam[:, None], size=(16, 24), mode="bilinear", align_corners=False)[:, 0]


def test_gradcam_on_tokens_drops_class_token_and_matches_manual_computation():
    model = ToyViT("mean").eval()
    x = torch.randn(2, 3, 16, 24)  # a 4×6 token grid
    manual = _manual_token_cam(model, x, use_input=False)
    assert manual.amax() > 0
    torch.testing.assert_close(gradcam(model, x, normalize=False), manual)


def test_class_token_pooling_explains_the_last_blocks_input():
    # the block's output patch tokens never reach a class-token head: their gradient is zero,
    # so the map comes from the block's input, where attention still mixes the tokens
    model = ToyViT("cls").eval()
    x = torch.randn(2, 3, 16, 24)
    assert _manual_token_cam(model, x, use_input=False).amax() == 0
    manual = _manual_token_cam(model, x, use_input=True)
    assert manual.amax() > 0
    torch.testing.assert_close(gradcam(model, x, normalize=False), manual)


def test_models_prefix_token_count_is_used():
    model = ToyViT("mean").eval()
    model.num_prefix_tokens = 2   # e.g. class + distillation tokens: 1 + 24 tokens no longer fit
    with pytest.raises(ValueError, match="cannot lay out 25 tokens .*after 2 leading tokens"):
        gradcam(model, torch.randn(2, 3, 16, 24))
    assert token_grid("test", 18, (64, 64), prefix_tokens=2) == (4, 4, 2)


@pytest.mark.parametrize("n, image_hw, expected", [
    (197, (224, 224), (14, 14, 1)), (196, (224, 224), (14, 14, 0)), (49, (224, 224), (7, 7, 0)),
    (25, (16, 24), (4, 6, 1)), (24, (16, 24), (4, 6, 0)), (80, (225, 300), (8, 10, 0)),
    (65, (64, 64), (8, 8, 1)), (15, (30, 40), (3, 5, 0)),
])
def test_token_grid_finds_the_image_shaped_grid(n, image_hw, expected):
    assert token_grid("test", n, image_hw) == expected


def test_token_grid_rejects_counts_that_fit_no_grid():
    with pytest.raises(ValueError, match="cannot lay out 7 tokens as an h×w grid of the 64×64 image"):
        token_grid("test", 7, (64, 64))


class LoopedStage(nn.Module):
    """The forward iterates over the stage's blocks itself, so the stage container never runs."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.stage = nn.Sequential(nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1))
        self.fc = nn.Linear(6, 3)
        self.feature_info = [dict(num_chs=6, reduction=2, module="stage")]

    def forward(self, x):
        x = self.stem(x)
        for block in self.stage:
            x = block(x)
        return self.fc(x.mean((2, 3)))


def test_auto_layer_reads_a_looped_stage_through_its_last_block():
    model, x = LoopedStage(), torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(gradcam(model, x, normalize=False), gradcam(model, x, layer="stage.2", normalize=False))
    assert gradcam(model, x).amax() == 1
