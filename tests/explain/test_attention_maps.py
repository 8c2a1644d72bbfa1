"""attention_maps: documented shapes and layouts, softmax maps sum to one, switches restored."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import attnvision as av
from attnvision.explain import attention_maps, query_maps
from attnvision.layers._base import AttentionLayer


def test_cbam_gives_channel_weights_and_spatial_map_per_block():
    model = av.create_model("resnet20_cbam", num_classes=10)
    maps = attention_maps(model, torch.randn(2, 3, 32, 32))
    blocks = [n for n, m in model.named_modules() if type(m).__name__ == "CBAM"]
    assert list(maps) == [f"{b}.{k}" for b in blocks for k in ("channel", "spatial")]
    for block in blocks:
        channels = model.get_submodule(block).channels
        side = {16: 32, 32: 16, 64: 8}[channels]  # CIFAR ResNet stages: 32×32, 16×16, 8×8
        ch, sp = maps[f"{block}.channel"], maps[f"{block}.spatial"]
        assert ch.layout == "channel" and ch.channel_weights().shape == (2, channels)
        assert sp.layout == "spatial" and sp.value.shape == (2, 1, side, side)
        assert sp.spatial().shape == (2, side, side)
        assert 0 < ch.value.min() and ch.value.max() < 1 and 0 < sp.value.min() and sp.value.max() < 1


def test_bam_map_is_three_dimensional_and_shown_as_channel_mean():
    model = av.create_model("resnet20_bam", num_classes=10)
    maps = attention_maps(model, torch.randn(2, 3, 32, 32))
    assert list(maps) == ["stage_attn.0", "stage_attn.1"]  # after every stage but the last
    m = maps["stage_attn.1"]
    assert m.layout == "map" and m.value.shape == (2, 32, 16, 16)
    torch.testing.assert_close(m.spatial(), m.value.mean(1))


@pytest.mark.parametrize("name", ["resnet20_se", "resnet20_eca"])
def test_se_and_eca_give_channel_weights(name):
    model = av.create_model(name, num_classes=10)
    maps = attention_maps(model, torch.randn(2, 3, 32, 32), names="layer3.*")
    assert len(maps) == 3 and all(n.startswith("layer3.") for n in maps)
    assert all(m.layout == "channel" and m.value.shape == (2, 64) for m in maps.values())
    with pytest.raises(ValueError, match="no spatial layout"):
        next(iter(maps.values())).spatial()


def test_switches_and_previous_maps_are_restored_and_nothing_is_kept_afterwards():
    model = av.create_model("resnet20_cbam", num_classes=10).train()
    kept_layer = model.layer1[0].attn
    kept_layer.keep_attention = True
    sentinel = {"channel": torch.zeros(1)}
    kept_layer.last_attention = sentinel
    x = torch.randn(2, 3, 32, 32)
    maps, logits = attention_maps(model, x, return_logits=True)
    assert logits.shape == (2, 10) and len(maps) == 18
    assert model.training
    assert kept_layer.keep_attention is True and kept_layer.last_attention is sentinel
    others = [m for m in model.modules() if isinstance(m, AttentionLayer) and m is not kept_layer]
    assert all("keep_attention" not in m.__dict__ and m.last_attention is None for m in others)
    model(x)
    assert all(m.last_attention is None for m in others)


def test_model_without_attention_gives_no_maps_and_unknown_names_are_errors():
    assert attention_maps(av.create_model("resnet20", num_classes=10), torch.randn(1, 3, 32, 32)) == {}
    with pytest.raises(ValueError, match="unknown name 'layer9.*'"):
        attention_maps(av.create_model("resnet20_se", num_classes=10), torch.randn(1, 3, 32, 32), names="layer9.*")


class TokenAttention(AttentionLayer):
    """Multi-head self-attention on (B, N, C) that keeps its (B, heads, N, N) softmax weights."""

    def __init__(self, dim, heads, declare=False):
        super().__init__()
        if declare:
            self.attention_layout = "tokens"
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) / (c // self.heads) ** 0.5).softmax(-1)   # (B, heads, N, N)
        self._keep(attn)
        return x + (attn @ v).transpose(1, 2).reshape(b, n, c)


class ToyTokenNet(nn.Module):
    def __init__(self, dim=8, heads=2, cls_token=True):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim)) if cls_token else None
        self.blocks = nn.Sequential(TokenAttention(dim, heads), TokenAttention(dim, heads, declare=True))
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)                   # (B, h·w, C)
        if self.cls is not None:
            t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1)
        return self.head(self.blocks(t).mean(1))


def test_token_attention_weights_sum_to_one_and_give_one_query_map():
    maps = attention_maps(ToyTokenNet(), torch.randn(2, 3, 16, 24))          # 4×6 grid + class token
    assert list(maps) == ["blocks.0", "blocks.1"]
    for m in maps.values():   # blocks.0 found by its rows being distributions, blocks.1 declared
        assert m.layout == "tokens" and m.value.shape == (2, 2, 25, 25)
        torch.testing.assert_close(m.value.sum(-1), torch.ones(2, 2, 25))
        assert m.query_grid() == (4, 6, 1)
    m = maps["blocks.0"]
    torch.testing.assert_close(m.spatial(), m.value[:, :, 0, 1:].mean(1).reshape(2, 4, 6))   # class-token query
    torch.testing.assert_close(m.spatial((1, 2), head=1), m.value[:, 1, 1 + 1 * 6 + 2, 1:].reshape(2, 4, 6))
    evolution = query_maps(maps, query=(3, 5))
    assert list(evolution) == ["blocks.0", "blocks.1"] and all(v.shape == (2, 4, 6) for v in evolution.values())
    with pytest.raises(ValueError, match=r"query \(4, 0\) outside the 4×6 grid"):
        m.spatial((4, 0))


def test_model_prefix_token_count_sets_the_token_grid():
    model = ToyTokenNet()
    model.num_prefix_tokens = 1
    m = attention_maps(model, torch.randn(1, 3, 16, 16))["blocks.0"]   # 1 + 16 tokens
    assert m.prefix_tokens == 1 and m.query_grid() == (4, 4, 1)


def test_token_maps_without_class_token_default_to_centre_query():
    m = attention_maps(ToyTokenNet(cls_token=False), torch.randn(1, 3, 16, 16))["blocks.0"]
    assert m.query_grid() == (4, 4, 0)
    torch.testing.assert_close(m.spatial(), m.value[:, :, 2 * 4 + 2].mean(1).reshape(1, 4, 4))


class LocalWindow(AttentionLayer):
    """Keeps (B, heads, H, W, k, k) weights: a softmax over each pixel's k×k window (values are random)."""

    def __init__(self, k=3, heads=2):
        super().__init__()
        self.k, self.heads = k, heads

    def forward(self, x):
        b, _, h, w = x.shape
        logits = torch.randn(b, self.heads, h, w, self.k * self.k)
        self._keep(logits.softmax(-1).reshape(b, self.heads, h, w, self.k, self.k))
        return x


def test_local_window_weights_are_placed_around_the_query_and_clipped_at_the_border():
    m = attention_maps(nn.Sequential(LocalWindow()), torch.randn(1, 3, 5, 6))["0"]
    assert m.layout == "local"
    torch.testing.assert_close(m.value.sum((-2, -1)), torch.ones(1, 2, 5, 6))
    centre = m.spatial((2, 3), head=0)[0]
    assert centre.shape == (5, 6)
    torch.testing.assert_close(centre[1:4, 2:5], m.value[0, 0, 2, 3])
    assert centre.sum() == pytest.approx(1.0, abs=1e-6)
    corner = m.spatial((0, 0), head=1)[0]
    torch.testing.assert_close(corner[0:2, 0:2], m.value[0, 1, 0, 0, 1:, 1:])  # the window's outside part is not drawn
    assert corner[2:].sum() == 0 and corner[:, 2:].sum() == 0


def test_unrecognised_shapes_and_layouts_are_errors():
    class Odd(AttentionLayer):
        def forward(self, x):
            self._keep(x[:, 0, 0])   # (B, W): read as channel weights, fine
            return x

    class Bad(AttentionLayer):
        def forward(self, x):
            self._keep(x[:, :, 0])   # (B, C, W): no convention
            return x

    class Declared(AttentionLayer):
        attention_layout = "heads"

        def forward(self, x):
            self._keep(x)
            return x

    x = torch.rand(1, 2, 3, 4)
    assert attention_maps(nn.Sequential(Odd()), x)["0"].layout == "channel"
    with pytest.raises(ValueError, match=r"layer '0' kept a tensor of shape \(1, 2, 4\)"):
        attention_maps(nn.Sequential(Bad()), x)
    with pytest.raises(ValueError, match="declares attention_layout='heads'"):
        attention_maps(nn.Sequential(Declared()), x)
