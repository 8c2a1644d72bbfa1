"""The ``family`` fixture: each family's tiny backbone (:mod:`tiny_backbones`)."""
from __future__ import annotations

import pytest
from tiny_backbones import BUILDERS


@pytest.fixture(params=sorted(BUILDERS))
def family(request):
    """``(family name, a fresh tiny backbone)``."""
    return request.param, BUILDERS[request.param]()
