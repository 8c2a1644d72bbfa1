"""The documentation's tables, generated from the code: ``python tools/doc_tables.py --write``.

Each table sits in a page (README.md or docs/*.md) between ``<!-- BEGIN table:NAME -->`` and
``<!-- END table:NAME -->``. A family adds its table with :func:`register_table` and places the
markers in its page. ``--write`` rewrites every table of the pages named (by default README.md and
every docs/*.md); ``--check`` exits 1 naming each stale table (the test suite checks them too).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Callable

import torch

from attnvision import attach, create_model, create_segmenter, list_models, profile
from attnvision._table import format_table
from attnvision.cli.models import weights_table
from attnvision.io import atomic_write_text
from attnvision.layers.lka import lka_cost, lka_kernels, lka_receptive_field
from attnvision.models.coatnet import COATNET_CFGS, LAYOUTS
from attnvision.models.resnet import ATTN_KINDS

DOC_TABLES: dict[str, Callable[[], str]] = {}
ROOT = Path(__file__).resolve().parents[1]
_BEGIN = re.compile(r"^<!-- BEGIN table:(\S+) -->$", re.M)  # a marker is a line of its own


def default_pages(root: Path = ROOT) -> list[Path]:
    """The pages that may hold tables: README.md and every Markdown file in docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def markers(text: str, where: str = "text") -> list[str]:
    """Names of the tables ``text`` marks, in order; a marker without a generator or an END is an error."""
    names = _BEGIN.findall(text)
    for name in names:
        if name not in DOC_TABLES:
            raise ValueError(f"doc_tables: {where} marks table {name!r}, which no generator makes; "
                             f"known: {', '.join(sorted(DOC_TABLES))}")
        if not re.search(rf"^<!-- END table:{re.escape(name)} -->$", text, re.M):
            raise ValueError(f"doc_tables: {where} opens table {name!r} without <!-- END table:{name} -->")
    return names


def register_table(name: str):
    def add(fn):
        DOC_TABLES[name] = fn
        return fn
    return add


def _fmt_m(n) -> str:
    return "–" if n is None else f"{n / 1e6:.2f} M"


def _fmt_g(n) -> str:
    return "–" if n is None else f"{n / 1e9:.3f} G"


def model_rows(names, num_classes: int = 1000, macs_kwargs: dict | None = None, **model_kwargs):
    """(name, params, MACs, MACs with ``macs_kwargs``, pretrained_cfg) per model, built on the meta device."""
    rows = []
    for name in names:
        with torch.device("meta"):
            model = create_model(name, num_classes=num_classes, **model_kwargs)
        size = (1, *model.pretrained_cfg["input_size"])
        p = profile(model, size)
        alt = profile(name, size, num_classes=num_classes, **model_kwargs, **macs_kwargs).macs if macs_kwargs else None
        rows.append((name, p.params, p.macs, alt, model.pretrained_cfg))
    return rows


@register_table("resnet")
def resnet_table() -> str:
    names = [f"{b}{'_' + a if a else ''}" for b in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                                   "resnext50_32x4d", "resnext101_32x4d", "wide_resnet18_1_5",
                                                   "wide_resnet18_2") for a in (None, *ATTN_KINDS)]
    body = []
    for name, params, macs, macs_orig, cfg in model_rows(names, macs_kwargs=dict(stride_in_1x1=True)):
        body.append([f"`{name}`", f"{params:,}", _fmt_m(cfg.get("paper_params")), _fmt_g(macs), _fmt_g(macs_orig),
                     _fmt_g(cfg.get("paper_macs"))])
    return format_table(["model", "params (ours)", "params (paper)", "MACs (ours)", "MACs, stride in 1×1 (ours)",
                         "MACs (paper)"], body, markdown=True)


@register_table("resnet_cifar")
def resnet_cifar_table() -> str:
    names = [f"{b}{'_' + a if a else ''}" for b in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                                                   "preresnet110", "wide_resnet16_8", "wide_resnet28_8",
                                                   "wide_resnet28_10", "resnext29_8x64d") for a in (None, *ATTN_KINDS)]
    body = [[f"`{n}`", f"{p:,}", _fmt_m(cfg.get("paper_params")), _fmt_g(m)]
            for n, p, m, _, cfg in model_rows(names, num_classes=10)]
    return format_table(["model (10 classes, 32×32)", "params (ours)", "params (paper)", "MACs (ours)"], body,
                        markdown=True)


def _ours_and_paper(names: list[str]) -> str:
    """Parameters and MACs of ``names``, ours beside the paper's (``paper_params``/``paper_macs``)."""
    body = [[f"`{n}`", f"{p:,}", _fmt_m(cfg.get("paper_params")), _fmt_g(m), _fmt_g(cfg.get("paper_macs"))]
            for n, p, m, _, cfg in model_rows(names)]
    return format_table(["model", "params (ours)", "params (paper)", "MACs (ours)", "MACs (paper)"], body,
                        markdown=True)


@register_table("mobilenet_v2")
def mobilenet_v2_table() -> str:
    return _ours_and_paper(["mobilenet_v2" + (f"_{a}" if a else "") for a in (None, *ATTN_KINDS)])


@register_table("evolving")
def evolving_table() -> str:
    names = [f"{e}{b}" for b in ("aa_resnet34", "aa_resnet50", "aa_resnet101", "aa_resnet152", "vit_tiny",
                                 "vit_small") for e in ("", "ea_")]
    rows = model_rows(names) + model_rows(["aa_wide_resnet28_10"], num_classes=100)
    body = [[f"`{n}`", f"{cfg['input_size'][1]}×{cfg['input_size'][2]}, {cfg['num_classes']}", f"{p:,}",
             _fmt_m(cfg.get("paper_params")), _fmt_g(m)] for n, p, m, _, cfg in rows]
    return format_table(["model", "input, classes", "params (ours)", "params (paper)", "MACs (ours)"], body,
                        markdown=True)


@register_table("attach")
def attach_table() -> str:
    import torchvision.models as tvm


    cases = [("resnet50", None, None), *(("resnet50", k, "default") for k in ("se", "eca", "bam", "cbam")),
             ("resnet50", "cbam", "identity"), ("mobilenet_v2", None, None), ("mobilenet_v2", "cbam", "default"),
             ("efficientnet_b0", None, None), ("efficientnet_b0", "cbam", "default"), ("convnext_tiny", None, None),
             ("convnext_tiny", "cbam", "default")]
    body, base = [], None
    for arch, kind, init in cases:
        with torch.device("meta"):
            model = tvm.get_model(arch)
        inserted = len(attach(model, kind, init=init)) if kind else 0
        p = profile(model)
        if kind is None:
            base = p
            body.append([f"`{arch}`", "–", "–", f"{p.params:,}", "–", _fmt_g(p.macs), "–", "–"])
            continue
        ours = f"{arch}_{kind}"
        ours_params = f"`{ours}`: {profile(ours).params:,}" if ours in list_models() else "–"
        body.append([f"`{arch}`", f'`attach(model, "{kind}", init="{init}")`', str(inserted), f"{p.params:,}",
                     f"+{p.params - base.params:,}", _fmt_g(p.macs), f"+{(p.macs - base.macs) / 1e6:.1f} M",
                     ours_params])
    return format_table(["torchvision model", "call", "modules", "params", "added", "MACs", "added MACs",
                         "attnvision model"], body, markdown=True)


@register_table("coatnet")
def coatnet_table() -> str:
    body = []
    for name in COATNET_CFGS:
        cells = [f"`{name}`"]
        for size, paper_key in ((224, "paper_macs"), (384, "paper_macs_384"), (512, "paper_macs_512")):
            kw = dict(img_size=size)
            p = profile(name, (1, 3, size, size), **kw)
            p1 = profile(name, (1, 3, size, size), stride_in_1x1=True, **kw)
            with torch.device("meta"):
                cfg = create_model(name, **kw).pretrained_cfg
            if size == 224:
                cells += [f"{p.params:,}", _fmt_m(cfg["paper_params"])]
            cells += [_fmt_g(p.macs), _fmt_g(p1.macs), _fmt_g(cfg.get(paper_key))]
        body.append(cells)
    return format_table(["model", "params (ours)", "params (paper)"]
                        + [head for size in (224, 384, 512) for head in (
                            f"MACs {size}", f"MACs {size}, stride in 1×1", f"FLOPs {size} (paper)")], body,
                        markdown=True)


@register_table("coatnet_layouts")
def coatnet_layouts_table() -> str:
    body = []
    for layout in LAYOUTS:
        p = profile("coatnet_0", layout=layout)
        body.append([f"`{layout}`", f"{p.params:,}", _fmt_g(p.macs)])
    return format_table(["coatnet_0, layout=", "params", "MACs 224"], body, markdown=True)


@register_table("sasa")
def sasa_table() -> str:
    body = []
    for base in ("sasa_resnet26", "sasa_resnet38", "sasa_resnet50"):
        for stem in ("conv", "attention"):
            for name, params, macs, _, cfg in model_rows([base], stem=stem):
                body.append([f"`{name}`", stem, f"{params:,}", _fmt_m(cfg.get("paper_params")), _fmt_g(macs),
                             _fmt_g(cfg.get("paper_macs"))])
    table = format_table(["model", "stem", "params (ours)", "params (paper)", "MACs (ours)", "MACs (paper)"], body,
                         markdown=True)
    (_, p_conv, m_conv, _, _), = model_rows(["resnet50"])
    (_, p_att, m_att, _, _), = model_rows(["sasa_resnet50"], stem="attention")
    return (f"{table}\n\nFull-attention `sasa_resnet50` against the conv `resnet50`: parameters "
            f"{100 * (p_att / p_conv - 1):+.1f}%, MACs {100 * (m_att / m_conv - 1):+.1f}% (the paper: −29% and −12%).")


@register_table("sasa_stages")
def sasa_stages_table() -> str:
    body = []
    for stages in ((1, 2, 3, 4), (2, 3, 4), (3, 4), (4,), (), (1,), (1, 2), (1, 2, 3)):
        conv = [g for g in (1, 2, 3, 4) if g not in stages]
        (_, params, macs, _, _), = model_rows(["sasa_resnet50"], stem="conv", attention_stages=stages)
        body.append([", ".join(map(str, conv)) or "–", ", ".join(map(str, stages)) or "–", f"`{stages}`",
                     f"{params:,}", _fmt_g(macs)])
    return format_table(["conv groups", "attention groups", "attention_stages", "params", "MACs"], body, markdown=True)


@register_table("van")
def van_table() -> str:
    return _ours_and_paper([f"van_b{i}" for i in range(7)])


@register_table("lka_cost")
def lka_cost_table() -> str:
    body = []
    for k, d in ((7, 2), (14, 3), (21, 3), (28, 4)):
        c = lka_cost(32, k, d)
        dw, dil = lka_kernels(k, d)
        body.append([f"K={k}, d={d}", f"{dw}×{dw} + {dil}×{dil} dilated {d} + 1×1", lka_receptive_field(k, d),
                     f"{c['params']:,}", f"{c['mobilenet']['params']:,}", f"{c['standard']['params']:,}"])
    return format_table(["kernel", "decomposition", "receptive field", "LKA params", "MobileNet-style",
                         "standard conv"], body, markdown=True)


@register_table("dense_heads")
def dense_heads_table() -> str:
    body = []
    for backbone in ("resnet18", "resnet50", "van_b0", "van_b1", "van_b2", "coatnet_0"):
        row = [f"`{backbone}`"]
        for arch in ("semantic_fpn", "upernet"):
            with torch.device("meta"):
                model = create_segmenter(arch, backbone, 150)
            head = sum(p.numel() for p in model.head.parameters())
            if len(row) == 1:
                row.append(_fmt_m(sum(p.numel() for p in model.body.parameters())))
            row += [_fmt_m(head), _fmt_m(head + sum(p.numel() for p in model.body.parameters()))]
        body.append(row)
    return format_table(["backbone", "backbone params", "Semantic FPN head", "total", "UperNet head", "total"], body,
                        markdown=True)


@register_table("weights")
def weights_docs_table() -> str:
    """The published weights: the table ``attnvision models --pretrained`` prints, in Markdown."""
    return weights_table(markdown=True)


def _block(name: str) -> re.Pattern:
    """The marked block of table ``name``: (BEGIN line, the table or None when empty, END line)."""
    return re.compile(rf"^(<!-- BEGIN table:{re.escape(name)} -->\n)(?:(.*?)\n)?"
                      rf"(<!-- END table:{re.escape(name)} -->)$", re.S | re.M)


def _compute(names: list[str], cache: dict[str, str], progress: bool, where: str) -> None:
    from tqdm import tqdm

    with tqdm(names, desc=f"{where}: tables", unit="table", file=sys.stderr, disable=not progress) as bar:
        for name in bar:
            bar.set_postfix_str(name)
            if name not in cache:
                cache[name] = DOC_TABLES[name]()


def render(text: str, progress: bool = False, where: str = "text", cache: dict[str, str] | None = None) -> str:
    """``text`` with every table it marks regenerated; ``progress`` draws a bar on stderr (minutes in all).

    ``cache`` (name -> table) spares computing a table twice over several pages.
    """
    cache = {} if cache is None else cache
    names = markers(text, where)
    _compute(names, cache, progress, where)
    for name in names:
        text = _block(name).sub(lambda m: m[1] + cache[name] + "\n" + m[3], text)
    return text


def stale_tables(text: str, progress: bool = False, where: str = "text",
                 cache: dict[str, str] | None = None) -> list[str]:
    """Names of the tables ``text`` marks whose content is not what the code generates today."""
    cache = {} if cache is None else cache
    names = markers(text, where)
    _compute(names, cache, progress, where)
    return [name for name in names if _block(name).search(text)[2] != cache[name]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("pages", nargs="*", type=Path,
                        help="Markdown files holding tables (default: README.md and docs/*.md)")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="rewrite the tables in place")
    group.add_argument("--check", action="store_true", help="exit 1 if a table is stale")
    args = parser.parse_args(argv)
    cache: dict[str, str] = {}
    stale = []
    for page in args.pages or default_pages():
        try:
            text = page.read_text(encoding="utf-8")
            if args.check:
                stale += [f"{page}: {name}" for name in stale_tables(text, True, str(page), cache)]
                continue
            new = render(text, True, str(page), cache)
        except (OSError, ValueError) as e:
            parser.exit(2, f"{parser.prog}: error: {e}\n")
        if new != text:
            atomic_write_text(page, new)
    if stale:
        print("stale tables (run python tools/doc_tables.py --write):\n  " + "\n  ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
