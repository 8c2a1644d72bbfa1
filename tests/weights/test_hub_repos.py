"""create_model("hf-hub:ORG/NAME") and pretrained="hf-hub:...": repositories in our format read through a Hub
cache filled by hand (offline, no network); other formats refused in one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hub_cache import put_folder, put_repo

import attnvision as av
from attnvision.weights.hub import describe_config, parse_hub_spec

REPO = "someorg/tiny-resnet"
pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture
def saved(tmp_path):
    """A resnet20 (7 classes, 1 channel, a model kwarg) written by save_pretrained, and the model."""
    model = av.create_model("resnet20", num_classes=7, in_chans=1, drop_rate=0.1).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so that they are seen to travel
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return model, Path(av.save_pretrained(model, tmp_path / "saved", repo_id=REPO))


def test_hub_name_rebuilds_the_saved_model_with_identical_outputs(hub_cache, saved):
    model, folder = saved
    put_folder(hub_cache, REPO, folder)
    loaded = av.create_model(f"hf-hub:{REPO}").eval()
    assert type(loaded) is type(model) and loaded.num_classes == 7 and loaded.in_chans == 1
    assert loaded.drop_rate == 0.1  # the saved model kwargs
    assert loaded.pretrained_cfg["hf_hub_id"] == REPO and loaded.pretrained_cfg["input_size"] == (1, 32, 32)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_hub_name_takes_features_only_and_a_revision(hub_cache, saved):
    model, folder = saved
    put_folder(hub_cache, REPO, folder)
    feats = av.create_model(f"hf-hub:{REPO}@main", features_only=True, out_indices=(1, 2)).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        want = model.forward_intermediates(x, indices=(1, 2), intermediates_only=True)
        assert all(torch.equal(g, w) for g, w in zip(feats(x), want))


def test_pretrained_hub_weights_fine_tune_another_head_with_a_warning(hub_cache, saved):
    model, folder = saved
    put_folder(hub_cache, REPO, folder)
    with pytest.warns(UserWarning, match=r"dropped the classifier of another shape \(fc.weight, fc.bias\)"):
        tuned = av.create_model("resnet20", num_classes=3, pretrained=f"hf-hub:{REPO}").eval()
    assert tuned.fc.out_features == 3 and tuned.in_chans == 1  # the repository's channels by default
    assert torch.equal(tuned.conv1.weight, model.conv1.weight)
    # another architecture of the same trunk: the attention keeps its initialisation, named in the warning
    with pytest.warns(UserWarning, match="attention tensors keep their initialisation"):
        se = av.create_model("resnet20_se", pretrained=f"hf-hub:{REPO}")
    assert torch.equal(se.conv1.weight, model.conv1.weight) and se.num_classes == 7


def test_hub_name_with_other_weights_is_refused(hub_cache, saved):
    put_folder(hub_cache, REPO, saved[1])
    with pytest.raises(ValueError, match=r"create_model: 'hf-hub:someorg/tiny-resnet' brings its own weights"):
        av.create_model(f"hf-hub:{REPO}", pretrained="other.safetensors")


@pytest.mark.parametrize("config, found", [
    ({"model_type": "vit", "architectures": ["ViTForImageClassification"]},
     "a transformers config \\(model_type 'vit'"),
    ({"architecture": "resnet50", "num_classes": 1000, "pretrained_cfg": {}}, "timm's \\(architecture 'resnet50'\\)"),
    ({"hello": 1}, "no library_name 'attnvision' \\(keys: hello\\)"),
])
def test_a_repository_in_another_format_is_one_line_naming_what_was_found(hub_cache, config, found):
    put_repo(hub_cache, "other/repo", {"config.json": json.dumps(config).encode(), "model.safetensors": b"x"})
    with pytest.raises(ValueError, match=f"create_model: hf-hub:other/repo is not an attnvision model repository: "
                                         f"its config.json (is|has) .*{found}") as err:
        av.create_model("hf-hub:other/repo")
    assert "\n" not in str(err.value)


def test_a_repository_of_attached_attention_points_to_load_model(hub_cache, saved):
    _, folder = saved
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, attach="se")))
    put_folder(hub_cache, REPO, folder)
    with pytest.raises(ValueError, match=r"holds resnet20 with 'se' attention attached.*load_model\('hf-hub:"):
        av.create_model(f"hf-hub:{REPO}")


def test_damaged_config_names_the_fields(hub_cache):
    put_repo(hub_cache, "other/repo", {"config.json": json.dumps({"library_name": "attnvision", "architecture": 3,
                                                                  "num_classes": 10}).encode()})
    with pytest.raises(ValueError, match=r"damaged: architecture \(expected str, got int\), model_kwargs"):
        av.create_model("hf-hub:other/repo")


def test_offline_repository_not_in_the_cache_is_one_line_naming_the_cache(hub_cache):
    with pytest.raises(OSError, match=r"create_model: someorg/absent/config.json is not in the Hugging Face cache .*"
                                      r"offline mode is on"):
        av.create_model("hf-hub:someorg/absent")


@pytest.mark.parametrize("spec", ["hf-hub:", "hf-hub:noslash", "hf-hub:a/b/c", "hf-hub:a/b@", "hf-hub:a /b"])
def test_malformed_hub_names_are_refused(spec):
    with pytest.raises(ValueError, match="is not a Hub model name; expected 'hf-hub:ORG/NAME'"):
        parse_hub_spec(spec, "create_model")
    assert parse_hub_spec("hf-hub:org/name@v1.0", "x") == ("org/name", "v1.0")


def test_describe_config_of_a_non_object():
    assert describe_config([1, 2]) == "its config.json holds a list, not an object"
