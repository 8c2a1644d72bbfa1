"""torch.hub entry points: every registered attnvision model.

    model = torch.hub.load("OWNER/attnvision", "resnet50_cbam", pretrained=False, num_classes=10)

Each entry is ``create_model(NAME, pretrained=..., **kwargs)``: ``pretrained`` is False, a local weights
file, or ``"hf-hub:ORG/NAME"`` (a repository written by ``attnvision.save_pretrained``). ``torch.hub.list``
shows the names, ``torch.hub.help`` the model's description.
"""
from attnvision import factory as _factory

# import names torch.hub checks before loading (attnvision's required packages)
dependencies = ["torch", "torchvision", "numpy", "PIL", "safetensors", "tqdm"]


def _entry(name: str):
    def entry(pretrained=False, **kwargs):
        return _factory.create_model(name, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"{_factory.MODELS.get(name).__doc__ or name}\n\n"
                     f"``torch.hub.load(REPO, {name!r}, pretrained=False, **kwargs)`` is "
                     f"``attnvision.create_model({name!r}, pretrained=..., **kwargs)``.")
    return entry


for _name in _factory.list_models():
    globals()[_name] = _entry(_name)
