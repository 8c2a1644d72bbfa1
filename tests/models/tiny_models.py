"""One tiny model per family (the family's own class, few blocks, narrow), with an input size it takes."""
from __future__ import annotations

from attnvision.models.aa_resnet import AAResNet
from attnvision.models.coatnet import CoAtNet, CoAtNetCfg
from attnvision.models.mobilenet import MobileNetV1
from attnvision.models.resnet import ResNet, ResNetCfg
from attnvision.models.sasa import SASACfg, SASAResNet
from attnvision.models.van import VAN, VANCfg
from attnvision.models.vit import VisionTransformer, ViTCfg

# family -> (builder(**kwargs), input side)
TINY = {
    "resnet_cbam": (lambda **kw: ResNet(ResNetCfg("bottleneck", (1, 1, 1, 1), widths=(4, 8, 8, 16), stem_width=8),
                                        attn="cbam", **kw), 64),
    "resnet_bam": (lambda **kw: ResNet(ResNetCfg("basic", (1, 1, 1, 1), widths=(8, 8, 16, 16), stem_width=8),
                                       attn="bam", attn_kwargs=dict(reduction=4), **kw), 64),
    "preresnet_se": (lambda **kw: ResNet(ResNetCfg("preact_basic", (1, 1, 1), widths=(8, 16, 16), stem="cifar",
                                                   stem_width=8), attn="se", attn_kwargs=dict(reduction=4),
                                      # channels-last CPU training of it crashes in torch 2.14
                                      channels_last=False, **kw),
                     64),
    "mobilenet_eca": (lambda **kw: MobileNetV1(width_mult=0.125, attn="eca", **kw), 64),
    "van": (lambda **kw: VAN(VANCfg((8, 8, 16, 16), (1, 1, 1, 1), (2, 2, 2, 2)), **kw), 64),
    "coatnet": (lambda **kw: CoAtNet(CoAtNetCfg((1, 1, 1, 1), (8, 8, 16, 16, 32)), head_dim=8, img_size=64, **kw), 64),
    "sasa": (lambda **kw: SASAResNet(SASACfg((1, 1, 1, 1), widths=(8, 8, 16, 16), stem_width=8), heads=2, **kw), 64),
    "ea_aa_resnet": (lambda **kw: AAResNet(ResNetCfg("basic", (1, 1, 1, 1), widths=(16, 16, 32, 32), stem_width=8),
                                           heads=2, img_size=128, evolve=True, **kw), 128),
    "ea_vit": (lambda **kw: VisionTransformer(ViTCfg(16, 2, 2, patch_size=8), img_size=32, evolve=True, **kw), 32),
}
CNN_FAMILIES = [f for f in TINY if "vit" not in f]


def tiny_model(family: str, **kwargs):
    """(the family's tiny model in eval mode, its input side); 5 classes unless given."""
    build, side = TINY[family]
    kwargs.setdefault("num_classes", 5)
    return build(**kwargs).eval(), side
