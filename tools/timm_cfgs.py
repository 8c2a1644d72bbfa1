"""The table of timm ``pretrained_cfg`` fields of every registered model, ``attnvision/_timm_cfgs.json``.

``import attnvision.timm`` hands timm's registry each model's cfg without building the models (building all
of them takes seconds); this writes the table from the models themselves, built on the meta device:

    python -m tools.timm_cfgs           # write it
    python -m tools.timm_cfgs --check   # exit 1 when it is stale

tests/test_timm.py checks every entry against its model.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from attnvision import create_model, list_models
from attnvision.io import atomic_write_text
from attnvision.timm import TABLE, timm_cfg


def model_cfg(name: str) -> dict:
    with torch.device("meta"):
        return timm_cfg(create_model(name).pretrained_cfg)


def render() -> str:
    """One line a model (a model's change is one line of the diff)."""
    rows = [f"{json.dumps(name)}: {json.dumps(model_cfg(name), sort_keys=True)}" for name in list_models()]
    return "{\n" + ",\n".join(rows) + "\n}\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 when stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        with open(TABLE, encoding="utf-8") as f:
            stale = f.read() != text
        if stale:
            print(f"{TABLE} is stale: run python -m tools.timm_cfgs", file=sys.stderr)
        return int(stale)
    atomic_write_text(TABLE, text)
    print(f"wrote {TABLE} ({len(list_models())} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
