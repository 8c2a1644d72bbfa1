"""Random-init models in each publisher's layout -> attnvision via load_checkpoint; outputs compared.

Run from the repository root: PYTHONPATH=. python notes/check_layouts.py (needs timm, torchvision, transformers).
"""
import timm
import torch
import torchvision
import transformers

import attnvision
from attnvision.checkpoint import load_checkpoint

torch.manual_seed(0)
x = torch.randn(2, 3, 224, 224)

def check(label, src, name, src_fn=lambda m, x: m(x), **kw):
    src.eval()
    dst = attnvision.create_model(name, **kw).eval()
    rep = load_checkpoint(dst, src.state_dict(), source="auto")
    with torch.no_grad():
        a, b = src_fn(src, x), dst(x)
    print(f"{label:45s} -> {name:14s} {kw!s:50s} source={rep.source:10s} max|diff|={(a-b).abs().max():.2e}")

check("torchvision resnet18", torchvision.models.resnet18(), "resnet18")
check("torchvision resnet50", torchvision.models.resnet50(), "resnet50")
check("torchvision mobilenet_v2", torchvision.models.mobilenet_v2(), "mobilenet_v2")
check("timm resnet50 (a1/tv2 layout)", timm.create_model("resnet50"), "resnet50")
check("timm seresnet50", timm.create_model("seresnet50"), "resnet50_se")
check("timm legacy_seresnet50", timm.create_model("legacy_seresnet50"), "resnet50_se", stride_in_1x1=True, stem_pool="ceil")
check("timm legacy_seresnet101", timm.create_model("legacy_seresnet101"), "resnet101_se", stride_in_1x1=True, stem_pool="ceil")
cfg = transformers.VanConfig(hidden_sizes=[32, 64, 160, 256], depths=[3, 3, 5, 2], mlp_ratios=[8, 8, 4, 4], num_labels=1000)
check("transformers VanForImageClassification van-tiny", transformers.VanForImageClassification(cfg), "van_b0",
      src_fn=lambda m, x: m(x).logits)
for tname, ours in (("coatnet_0_rw_224", "coatnet_0"), ("coatnet_1_rw_224", "coatnet_1")):
    try:
        check("timm " + tname, timm.create_model(tname), ours)
    except ValueError as e:
        print(f"timm {tname} -> {ours}: {type(e).__name__}: {str(e)[:150]}")
