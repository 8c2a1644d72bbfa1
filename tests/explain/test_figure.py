"""explain_image: the panels and their labels, for a CNN with channel gates and a token model."""
from __future__ import annotations

import torch
from torch import nn

import attnvision as av
from attnvision.explain import explain_image, save_figure
from attnvision.explain.figure import COLUMNS, PANEL_H, PANEL_W, figure_size
from attnvision.layers._base import AttentionLayer


def _titles(fig):
    return [ax.get_title() for ax in fig.get_axes() if ax.get_title()]


def test_cnn_figure_has_input_cam_predictions_channel_weights_and_evenly_spread_maps():
    model = av.create_model("resnet20_cbam", num_classes=4)
    box = (4, 6, 20, 30)
    fig = explain_image(model, torch.randn(3, 32, 32), target=2, class_names=["a", "b", "c", "d"], topk=3,
                        box=box, max_maps=4, title="demo")
    titles = _titles(fig)
    assert titles[0] == "input 32×32"
    assert titles[1].startswith("Grad-CAM for c (p=") and "layer layer3" in titles[1]
    assert "energy in box" in titles[1] and ("pointing hit" in titles[1] or "pointing miss" in titles[1])
    assert titles[2] == "top-3 predictions"
    assert titles[3].startswith("channel weights of 9 layers")
    # 9 CBAM spatial maps, 4 shown: indices round(0, 8/3, 16/3, 8) = 0, 3, 5, 8
    assert [t.split("\n")[0] for t in titles[4:]] == [
        "layer1.0.attn.spatial", "layer2.0.attn.spatial", "layer2.2.attn.spatial", "layer3.2.attn.spatial"]
    assert fig._suptitle.get_text() == "demo — attention maps: 4 of 9 shown"
    assert tuple(fig.get_size_inches()) == figure_size(9, 4) == (COLUMNS * PANEL_W, 2 * PANEL_H)


class Tokens(AttentionLayer):
    def __init__(self, dim):
        super().__init__()
        self.qk = nn.Linear(dim, 2 * dim)

    def forward(self, x):
        q, k = self.qk(x).chunk(2, -1)
        attn = (q @ k.transpose(1, 2)).softmax(-1)[:, None]   # (B, 1 head, N, N)
        self._keep(attn)
        return x + attn[:, 0] @ x


class TokenNet(nn.Module):
    def __init__(self, dim=6):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.Sequential(Tokens(dim), Tokens(dim))
        self.head = nn.Linear(dim, 2)
        self.feature_info = [dict(num_chs=dim, reduction=4, module="blocks")]

    def forward(self, x):
        return self.head(self.blocks(self.patch(x).flatten(2).transpose(1, 2)).mean(1))


def test_token_figure_names_the_query_and_is_saved(tmp_path):
    fig = explain_image(TokenNet(), torch.randn(3, 16, 32), query=(1, 5))
    titles = _titles(fig)   # input, CAM, predictions, then the maps (no channel gates: no title there)
    assert len(titles) == 5
    for i, title in enumerate(titles[3:]):
        assert title.startswith(f"blocks.{i}\nquery (1, 5), mean of heads, 4×8, range ")
    save_figure(fig, tmp_path / "tokens.svg")
    assert (tmp_path / "tokens.svg").read_text().lstrip().startswith("<?xml")
