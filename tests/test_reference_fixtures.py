"""The test suite's reference fixtures: rebuilt by our seeded-v1 implementation and kept inside the repository."""
from __future__ import annotations

from pathlib import Path

import pytest

import reference_fixtures

FIXTURES = sorted(p.name for p in reference_fixtures.REFERENCE_DIR.glob("*.pt"))
TESTS = Path(__file__).resolve().parent


def test_the_fixtures_live_inside_the_repository():
    assert reference_fixtures.REFERENCE_DIR.resolve().is_relative_to(TESTS.parent)
    assert len(FIXTURES) == 10


@pytest.mark.parametrize("name", FIXTURES)
def test_rebuilt_weights_match_each_fixtures_digest(name):
    ref = reference_fixtures.load(name)
    shapes = ref["meta"]["state_dict_shapes"]
    assert list(ref["state_dict"]) == list(shapes)
    assert all(tuple(t.shape) == tuple(shapes[k]) for k, t in ref["state_dict"].items())


def test_known_answer_of_the_seeded_rule():
    # meta["weights_sha256"] aside, the rule's one documented value: eca_layer_k3's conv.weight
    sd = reference_fixtures.seeded_state_dict({"conv.weight": [1, 1, 3]})
    assert sd["conv.weight"].tolist() == [[[-0.80810546875, 0.2393798828125, -0.75634765625]]]


def test_weight_norm_gains_follow_their_direction_tensors():
    sd = reference_fixtures.seeded_state_dict({"c.weight_g": [4, 1, 1], "c.weight_v": [4, 2, 3]})
    ratio = sd["c.weight_g"].double().flatten() / sd["c.weight_v"].double().flatten(1).norm(dim=1)
    assert ((ratio > 0.49) & (ratio < 1.51)).all()  # U(0.5, 1.5) times ||v||, rounded to float16


def test_a_wrong_rebuild_is_caught_by_the_digest(monkeypatch):
    real = reference_fixtures._draw
    monkeypatch.setattr(reference_fixtures, "_draw", lambda k, s, b: real(k, s, b) + 1e-2)
    with pytest.raises(AssertionError, match="SHA-256"):
        reference_fixtures.load("eca_layer_k3.pt")


def test_no_test_reads_files_beside_the_repository():
    for path in TESTS.rglob("*.py"):
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8")
        assert "shared/reference" not in text and '"shared"' not in text, path
