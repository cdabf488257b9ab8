from __future__ import annotations

import pytest

from custody_helpers import fake_material

from medtwin.he.keys import KeyMaterial


@pytest.fixture
def material() -> KeyMaterial:
    return fake_material()
