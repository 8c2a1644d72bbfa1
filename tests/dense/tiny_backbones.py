"""Tiny backbones of every family, small enough for a detector train step in a fraction of a second."""
from __future__ import annotations

from attnvision.models.aa_resnet import AAResNet
from attnvision.models.coatnet import CoAtNet, CoAtNetCfg
from attnvision.models.resnet import ResNet, ResNetCfg
from attnvision.models.sasa import SASACfg, SASAResNet
from attnvision.models.van import VAN, VANCfg

SIZE = 64
_WIDTHS = dict(widths=(8, 16, 16, 32), stem_width=8)

BUILDERS = {
    "resnet_cbam": lambda: ResNet(ResNetCfg("basic", (1, 1, 1, 1), **_WIDTHS), 0, attn="cbam",
                                  attn_kwargs=dict(reduction=4)),
    "van": lambda: VAN(VANCfg((8, 8, 16, 16), (1, 1, 1, 1), (2, 2, 2, 2)), 0),
    "coatnet": lambda: CoAtNet(CoAtNetCfg((1, 1, 1, 1), (8, 8, 16, 32, 32)), 0, head_dim=8, img_size=SIZE),
    "sasa": lambda: SASAResNet(SASACfg((1, 1, 1, 1), **_WIDTHS), 0, heads=2, kernel_size=3),
    "aa_resnet": lambda: AAResNet(ResNetCfg("basic", (1, 1, 1, 1), **_WIDTHS), 0, heads=2, img_size=SIZE),
}
