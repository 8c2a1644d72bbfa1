"""Detectors: every arch on a tiny backbone of every family trains and predicts; the FPN gets the
stages' channels and strides; ResNet-50 with torchvision's weights gives torchvision's boxes."""
from __future__ import annotations

import pytest
import torch
import torchvision
from tiny_backbones import BUILDERS, SIZE
from torchvision.ops import FrozenBatchNorm2d

import attnvision as av
from attnvision.dense import create_detector, detection_difference, from_torchvision
from attnvision.dense.backbone import FeaturePyramidBackbone, build_body
from attnvision.tasks.dense import DetectionTask
from attnvision.weights import load_checkpoint

SMALL = dict(min_size=SIZE, max_size=SIZE, fpn_channels=32)
FAST = dict(rpn_pre_nms_top_n_train=64, rpn_post_nms_top_n_train=32, rpn_pre_nms_top_n_test=64,
            rpn_post_nms_top_n_test=32, box_batch_size_per_image=16, box_head_width=32,
            box_detections_per_img=10)


def _targets(n: int = 2):
    boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 60.0, 50.0]])[:n]
    masks = torch.zeros(n, SIZE, SIZE, dtype=torch.uint8)
    for m, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
        m[y0:y1, x0:x1] = 1
    return dict(boxes=boxes, labels=torch.tensor([1, 3])[:n], masks=masks)


def _small(arch: str, backbone, **kw):
    extra = {} if arch in ("retinanet", "fcos") else dict(FAST)
    if arch in ("retinanet", "fcos"):
        extra = dict(topk_candidates=50, detections_per_img=20)
    return create_detector(arch, backbone, 5, **SMALL, **extra, **kw)


@pytest.mark.parametrize("arch", ["fasterrcnn", "maskrcnn", "retinanet", "fcos"])
def test_every_arch_on_every_family_returns_losses_that_backpropagate_and_detections_in_eval(arch, family):
    name, backbone = family
    model = _small(arch, backbone)
    assert isinstance(model, {"fasterrcnn": torchvision.models.detection.FasterRCNN,
                              "maskrcnn": torchvision.models.detection.MaskRCNN,
                              "retinanet": torchvision.models.detection.RetinaNet,
                              "fcos": torchvision.models.detection.FCOS}[arch])
    images = [torch.rand(3, SIZE, SIZE), torch.rand(3, SIZE, SIZE)]
    losses = model.train()(images, [_targets(2), _targets(1)])
    expected = {"fasterrcnn": 4, "maskrcnn": 5, "retinanet": 2, "fcos": 3}[arch]
    assert len(losses) == expected and all(torch.isfinite(v) for v in losses.values()), (name, losses)
    sum(losses.values()).backward()
    grads = [p.grad for p in model.backbone.body.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), name
    out = model.eval()(images)
    assert len(out) == 2 and {"boxes", "scores", "labels"} <= set(out[0])
    assert out[0]["boxes"].shape[1] == 4 and (out[0]["labels"] < 5).all()
    if arch == "maskrcnn":
        assert out[0]["masks"].shape[1:] == (1, SIZE, SIZE)


def test_fpn_receives_each_familys_stage_channels_and_strides(family):
    name, backbone = family
    body, stages = build_body(backbone)
    fpn = FeaturePyramidBackbone(body, 16)
    x = torch.rand(1, 3, SIZE, SIZE)
    maps = body.eval()(x)
    assert [m.shape[1] for m in maps] == [d["num_chs"] for d in body.feature_info], name
    assert [SIZE // m.shape[-1] for m in maps] == [d["reduction"] for d in body.feature_info] == fpn.strides, name
    assert [b[0].in_channels for b in fpn.fpn.inner_blocks] == [d["num_chs"] for d in body.feature_info]
    levels = fpn.eval()(x)
    assert [v.shape[1] for v in levels.values()] == [16] * len(maps)
    assert [SIZE // v.shape[-1] for v in levels.values()] == fpn.strides
    assert len(stages) == len(backbone.feature_info)


def test_anchor_sizes_follow_the_strides_as_torchvision_does_for_resnet50():
    with torch.device("meta"):
        frcnn = create_detector("fasterrcnn", "resnet50", 3)
        retina = create_detector("retinanet", "resnet50", 3)
        fcos = create_detector("fcos", "resnet50", 3)
    assert frcnn.backbone.strides == [4, 8, 16, 32, 64]
    assert frcnn.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))
    assert retina.backbone.strides == [8, 16, 32, 64, 128]
    assert retina.anchor_generator.sizes == tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3)))
                                                  for x in [32, 64, 128, 256, 512])
    assert fcos.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))


@pytest.mark.parametrize("channels_last", [False, True])
def test_resnet50_with_torchvisions_weights_gives_torchvisions_boxes_scores_and_labels(channels_last):
    tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4,
                                                              min_size=96, max_size=128, box_score_thresh=0.0)
    ours = create_detector("fasterrcnn", "resnet50", 4, min_size=96, max_size=128, box_score_thresh=0.0,
                           backbone_kwargs=dict(channels_last=channels_last))
    report = load_checkpoint(ours, tv.state_dict(), source="official")
    assert report.missing_keys == [] and report.unexpected_keys == []
    images = [torch.rand(3, 90, 120), torch.rand(3, 100, 80)]
    with torch.no_grad():
        expected, got = tv.eval()(images), ours.eval()(images)
    for e, g in zip(expected, got):
        assert len(e["boxes"]) > 10
        if channels_last:  # the same sums in another order: nearly tied detections may swap places
            box, score = detection_difference(g, e)
            assert box < 1e-2 and score < 1e-4, (box, score)
        else:
            torch.testing.assert_close(g["boxes"], e["boxes"], atol=1e-4, rtol=1e-5)
            torch.testing.assert_close(g["scores"], e["scores"], atol=1e-6, rtol=1e-5)
            assert torch.equal(g["labels"], e["labels"])


def test_detection_difference_matches_by_label_and_box_not_position():
    a = dict(boxes=torch.tensor([[0.0, 0, 5, 5], [10, 10, 20, 20]]), scores=torch.tensor([0.5, 0.5]),
             labels=torch.tensor([1, 2]))
    swapped = {k: v.flip(0) for k, v in a.items()}
    assert detection_difference(a, swapped) == (0.0, 0.0)
    assert detection_difference(a, dict(swapped, labels=torch.tensor([1, 1])))[0] == float("inf")
    moved = dict(a, boxes=a["boxes"] + 0.25)
    assert detection_difference(a, moved) == (0.25, 0.0)


def test_from_torchvision_moves_only_the_backbone_body_keys():
    sd = {"backbone.body.conv1.weight": torch.zeros(1), "backbone.fpn.layer_blocks.0.0.weight": torch.zeros(1),
          "rpn.head.conv.0.0.weight": torch.zeros(1)}
    assert sorted(from_torchvision(sd)) == ["backbone.body.model.conv1.weight", "backbone.fpn.layer_blocks.0.0.weight",
                                            "rpn.head.conv.0.0.weight"]


def test_pretrained_backbone_is_loaded_frozen_bn_and_only_the_last_stages_train(tmp_path):
    classifier = av.create_model("resnet20", num_classes=10)
    torch.nn.init.normal_(classifier.layer3[0].conv1.weight)
    path = tmp_path / "r20.pt"
    torch.save(classifier.state_dict(), path)
    model = create_detector("fasterrcnn", "resnet20", 3, pretrained_backbone=str(path), **SMALL)
    body = model.backbone.body.model
    torch.testing.assert_close(body.layer3[0].conv1.weight, classifier.layer3[0].conv1.weight)
    # torchvision's defaults with a pretrained backbone: FrozenBatchNorm2d, the last three stages train
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    torch.testing.assert_close(body.layer1[0].bn1.running_var, classifier.layer1[0].bn1.running_var)
    assert not body.conv1.weight.requires_grad
    assert all(p.requires_grad for p in body.layer1.parameters())  # resnet20 has three stages: all train
    one = create_detector("fasterrcnn", "resnet20", 3, trainable_stages=1, frozen_bn=False, **SMALL)
    trained = {n.split(".")[1] for n, p in one.backbone.body.named_parameters() if p.requires_grad}
    assert trained == {"layer3"}
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in one.backbone.body.modules())


def test_torchvision_timm_and_attached_backbones_build_detectors():
    attached = BUILDERS["resnet_cbam"]()
    av.attach(attached, "se", input_size=(1, 3, SIZE, SIZE), reduction=4)
    for backbone in ("torchvision:resnet18", "timm:resnet18", attached):
        model = _small("retinanet", backbone).eval()
        strides = model.backbone.strides
        assert strides == [8, 16, 32, 64, 128], backbone
        assert len(model([torch.rand(3, SIZE, SIZE)])) == 1


def test_detection_task_steps_and_evaluates_with_coco_metrics():
    from attnvision.data.dense import ClutteredDigitsDense

    task = DetectionTask()
    model = task.create(dict(arch="fcos", backbone=BUILDERS["resnet_cbam"](), num_classes=11,
                             min_size=SIZE, max_size=SIZE, fpn_channels=32))
    data = ClutteredDigitsDense("val", "detection", length=2)
    batch = task.collate_fn([data[0], data[1]])
    loss = task.train_step(model.train(), batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    metrics = task.evaluate_loader(model, [batch])
    assert {"map", "map_50", "map_75", "map_small", "map_medium", "map_large"} <= set(metrics)
    assert model.training


@pytest.mark.parametrize("bad,match", [(dict(arch="yolo"), "yolo"), (dict(num_classes=1), "num_classes"),
                                       (dict(min_size=64, max_size=32), "max_size"),
                                       (dict(trainable_stages=9), "trainable_stages"),
                                       (dict(fpn_channels=0), "fpn_channels must be an integer >= 1"),
                                       (dict(arch="fcos", fpn_channels=48), r"GroupNorm\(32, fpn_channels\), so "
                                                                           r"fpn_channels must be a multiple of 32, "
                                                                           r"got 48")])
def test_bad_detector_arguments_raise_naming_the_argument(bad, match):
    kw = dict(arch="fasterrcnn", backbone="resnet20", num_classes=3) | bad
    with pytest.raises(ValueError, match=match):
        create_detector(kw.pop("arch"), kw.pop("backbone"), kw.pop("num_classes"), **kw)


@pytest.mark.parametrize("arch", ["fasterrcnn", "maskrcnn", "retinanet", "fcos"])
def test_every_resnet50_detector_has_torchvisions_tensors_under_converted_keys(arch):
    builder = getattr(torchvision.models.detection, f"{arch}_resnet50_fpn")
    with torch.device("meta"):
        ours = create_detector(arch, "resnet50", 91)
        tv = builder(weights=None, weights_backbone=None, num_classes=91)
    converted = {k: v.shape for k, v in from_torchvision(tv.state_dict()).items()}
    assert converted == {k: v.shape for k, v in ours.state_dict().items()}
