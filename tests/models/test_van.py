import json

import pytest
import torch

import attnvision as av
from attnvision.layers import LKA
from attnvision.models.van import VAN, VAN_VARIANTS, VANCfg

NAMES = [f"van_b{i}" for i in range(7)]
TINY = VANCfg((8, 8, 16, 16), (1, 1, 2, 1), (2, 2, 2, 2))


def _fixture_model(ref, dtype):
    model = av.create_model("van_b0", num_classes=10).eval()
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in ref["state_dict"].items()}
    report = av.load_checkpoint(model, sd, source="official")
    assert report.missing_keys == [] and report.unexpected_keys == []
    return model.to(dtype)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_equals_the_authors_code(name, reference_dir):
    expected = json.loads((reference_dir / "param_counts.json").read_text())[name]
    with torch.device("meta"):
        model = av.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("name", NAMES)
def test_macs_at_224_within_2_percent_of_the_paper(name):
    with torch.device("meta"):
        model = av.create_model(name)
    macs = av.profile(model).macs
    paper = model.pretrained_cfg["paper_macs"]
    assert abs(macs - paper) / paper < 0.02
    assert model.pretrained_cfg["paper_params"] == pytest.approx(VAN_VARIANTS[name][2])


def test_official_van_b0_reproduces_the_authors_outputs_fp64(load_reference):
    ref = load_reference("van_b0.pt")
    model = _fixture_model(ref, torch.float64)
    blocks = {f"stages.{i}.blocks.{n - 1}": f"feat.block{i + 1}.{n - 1}_fp64"
              for i, n in enumerate(model.cfg.depths) if f"feat.block{i + 1}.{n - 1}_fp64" in ref}
    assert list(blocks) == ["stages.3.blocks.1"]  # the fixture keeps the last block's output
    feats = {}
    for path in blocks:
        model.get_submodule(path).register_forward_hook(lambda m, i, o, path=path: feats.__setitem__(path, o))
    with torch.no_grad():
        out = model(ref["input"].double())
    for path, key in blocks.items():  # stored as float32
        torch.testing.assert_close(feats[path].float(), ref[key], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, ref["output_fp64"], rtol=0, atol=1e-9)


def test_official_van_b0_reproduces_the_authors_outputs_fp32(load_reference):
    ref = load_reference("van_b0.pt")
    model = _fixture_model(ref, torch.float32)
    with torch.no_grad():
        out = model(ref["input"])
    expected = ref["output_fp32"]
    assert ((out - expected).abs().max() / expected.abs().max()).item() <= 1e-4
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=5e-5)


def test_hugging_face_layout_loads_onto_every_key():
    model = VAN(TINY, num_classes=3)
    hf = {"classifier.weight": torch.zeros(3, 16), "classifier.bias": torch.zeros(3),
          "van.layernorm.weight": torch.zeros(16), "van.layernorm.bias": torch.zeros(16)}
    for s, (dim, depth, ratio) in enumerate(zip(TINY.dims, TINY.depths, TINY.mlp_ratios)):
        cin = 3 if s == 0 else TINY.dims[s - 1]
        k = 7 if s == 0 else 3
        p = f"van.encoder.stages.{s}."
        hf[p + "embeddings.convolution.weight"] = torch.zeros(dim, cin, k, k)
        hf[p + "embeddings.convolution.bias"] = torch.zeros(dim)
        for n in ("embeddings.normalization", *(f"layers.{j}.{bn}" for j in range(depth)
                                                for bn in ("pre_normomalization", "post_normalization"))):
            for t in ("weight", "bias", "running_mean", "running_var"):
                hf[f"{p}{n}.{t}"] = torch.zeros(dim)
            hf[f"{p}{n}.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
        hf[p + "normalization.weight"] = hf[p + "normalization.bias"] = torch.zeros(dim)
        hidden = int(dim * ratio)
        for j in range(depth):
            q = f"{p}layers.{j}."
            convs = {"attention.pre_projection.conv": (dim, dim, 1), "attention.post_projection": (dim, dim, 1),
                     "attention.attention_layer.attention.depth_wise": (dim, 1, 5),
                     "attention.attention_layer.attention.depth_wise_dilated": (dim, 1, 7),
                     "attention.attention_layer.attention.point_wise": (dim, dim, 1),
                     "mlp.in_dense": (hidden, dim, 1), "mlp.depth_wise": (hidden, 1, 3),
                     "mlp.out_dense": (dim, hidden, 1)}
            for name, (co, ci, kk) in convs.items():
                hf[f"{q}{name}.weight"] = torch.randn(co, ci, kk, kk)
                hf[f"{q}{name}.bias"] = torch.randn(co)
            hf[q + "attention_scaling.weight"] = torch.full((dim,), 0.5)
            hf[q + "mlp_scaling.weight"] = torch.full((dim,), 0.25)
    report = av.load_checkpoint(model, hf, source="official")
    assert report.missing_keys == [] and report.unexpected_keys == []
    block = model.stages[2].blocks[1]
    torch.testing.assert_close(block.attn.lka.conv_dw_dilated.weight,
                               hf["van.encoder.stages.2.layers.1.attention.attention_layer.attention.depth_wise_dilated.weight"])
    assert torch.all(block.ls1.gamma == 0.5) and torch.all(block.ls2.gamma == 0.25)


@pytest.mark.parametrize("size", [(224, 224), (200, 296)])
def test_features_only_gives_four_stages_at_strides_4_to_32(size):
    model = av.create_model("van_b0", features_only=True).eval()
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    assert [f["num_chs"] for f in model.feature_info] == [32, 64, 160, 256]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, *size))
    h, w = size
    for f, info in zip(feats, model.feature_info):
        r = info["reduction"]
        assert f.shape == (1, info["num_chs"], -(-h // r), -(-w // r))  # ceil: nothing cropped


def test_features_are_the_normalised_stage_outputs_the_head_pools():
    model = VAN(TINY, num_classes=4).eval()
    x = torch.randn(2, 3, 37, 45)
    with torch.no_grad():
        feats = model.forward_intermediates(x, intermediates_only=True)
        logits = model(x)
        stage4 = model.stages[3]
        raw = stage4.blocks(stage4.patch_embed(feats[2]))
    torch.testing.assert_close(model.head(feats[3].mean((2, 3))), logits)
    mean = raw.mean(1)
    var = raw.var(1, unbiased=False)
    normed = (raw - mean[:, None]) / torch.sqrt(var[:, None] + 1e-6)
    expected = normed * stage4.norm.weight[:, None, None] + stage4.norm.bias[:, None, None]
    torch.testing.assert_close(feats[3], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel, dilation, dw, dil", [(7, 2, 3, 4), (14, 3, 5, 5), (21, 3, 5, 7), (28, 4, 7, 7)])
def test_lka_kernel_and_dilation_rebuild_every_lka(kernel, dilation, dw, dil):
    with torch.device("meta"):
        model = av.create_model("van_b0", lka_kernel=kernel, lka_dilation=dilation)
    lkas = [m for m in model.modules() if isinstance(m, LKA)]
    assert len(lkas) == sum(model.cfg.depths)
    for m in lkas:
        assert m.conv_dw.kernel_size == (dw, dw)
        assert m.conv_dw_dilated.kernel_size == (dil, dil) and m.conv_dw_dilated.dilation == (dilation, dilation)


def test_lka_kwargs_reach_every_block():
    with torch.device("meta"):
        model = av.create_model("van_b1", lka_kwargs=dict(sigmoid=True, dw_conv=False))
    lkas = [m for m in model.modules() if isinstance(m, LKA)]
    assert lkas and all(m.sigmoid and m.conv_dw is None for m in lkas)


def test_layer_scales_start_at_1e_2_and_drop_path_rises_linearly():
    model = VAN(TINY, drop_path_rate=0.3)
    blocks = [b for s in model.stages for b in s.blocks]
    assert all(torch.all(b.ls1.gamma == 1e-2) and torch.all(b.ls2.gamma == 1e-2) for b in blocks)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)
    assert all(a < b for a, b in zip(rates, rates[1:]))


def test_drop_rate_drops_inside_the_mlp_but_not_before_the_classifier():
    model = VAN(TINY, num_classes=5, drop_rate=0.5).train()
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(m.p == 0.5 for m in drops)
    assert all(".mlp." in name for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout))
    feats = torch.randn(4, 16, 3, 3)
    torch.testing.assert_close(model.forward_head(feats), model.head(feats.mean((2, 3))), rtol=0, atol=0)


def test_channels_last_model_gives_the_same_outputs():
    model = VAN(TINY, num_classes=5).eval().double()
    x = torch.randn(2, 3, 41, 30, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_compiled_model_traces_as_one_graph_and_gives_the_same_outputs():
    model = VAN(TINY, num_classes=5).eval()
    x = torch.randn(2, 3, 40, 52)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-6)


def test_training_step_reaches_every_parameter():
    model = VAN(TINY, num_classes=3)
    model(torch.randn(2, 3, 35, 29)).logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bad_input_names_the_model_and_the_shape():
    model = VAN(TINY)
    with pytest.raises(ValueError, match=r"VAN: expected input of shape \(B, 3, H, W\), got \(1, 4, 32, 32\)"):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(TypeError, match=r"VAN: lka_kwargs must be a dict"):
        VAN(TINY, lka_kwargs=["sigmoid"])
