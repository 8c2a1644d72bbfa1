"""hubconf.py: torch.hub.load(REPO, NAME, ...) gives create_model(NAME, ...) for every registered model."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

import attnvision as av

ROOT = Path(__file__).resolve().parents[1]


def _hubconf():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_torch_hub_load_from_the_repository_gives_the_registered_model():
    model = torch.hub.load(str(ROOT), "resnet20_cbam", source="local", pretrained=False, num_classes=10)
    reference = av.create_model("resnet20_cbam", num_classes=10)
    assert type(model) is type(reference) and model.num_classes == 10
    assert model.state_dict().keys() == reference.state_dict().keys()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), reference.eval()(x))


def test_every_registered_model_is_an_entry_and_the_dependencies_import():
    hubconf = _hubconf()
    entries = {n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")}
    assert entries == set(av.list_models())
    assert "CBAM" in hubconf.resnet50_cbam.__doc__
    assert all(importlib.util.find_spec(d) is not None for d in hubconf.dependencies)
