from __future__ import annotations

import pytest


@pytest.fixture(params=["openfhe", "native"])
def backend(request) -> str:
    """Every model's encrypted check runs on both backends: OpenFHE (the reference evaluator) and
    the native engine, each against the plaintext reference within the stated bound."""
    return request.param
