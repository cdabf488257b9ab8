"""Property tests: whatever JSON arrives, the importer answers with records or ImportFormatError."""
from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtwin.errors import ImportFormatError
from medtwin.fhir.importer import load_bundle

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "fhir" / "valid"
AS_OF = dt.date(2026, 1, 1)
VALID = [json.loads(p.read_text()) for p in sorted(FIX.glob("*.json"))]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=25)
keys = st.sampled_from(["resourceType", "type", "entry", "resource", "id", "subject", "reference",
                        "code", "coding", "system", "valueQuantity", "value", "unit", "gender",
                        "birthDate", "fullUrl", "effectiveDateTime", "status", "valueString"])
fhirish = st.recursive(
    st.one_of(scalars, st.sampled_from(["Bundle", "Patient", "Observation", "collection", "male",
                                        "29463-7", "http://loinc.org", "kg", "Patient/p1", "final"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=40)


def _check(source):
    try:
        out = load_bundle(source, as_of=AS_OF)
    except ImportFormatError:
        return
    assert isinstance(out, list)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_json_values(value):
    _check(value if isinstance(value, dict) else json.dumps(value))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fhirish)
def test_random_fhir_shaped_json(value):
    if isinstance(value, dict):
        value = dict(value, resourceType="Bundle")
    _check(value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text(text):
    _check(text)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_valid_bundles(data):
    bundle = copy.deepcopy(data.draw(st.sampled_from(VALID)))
    paths = [p for p in _paths(bundle) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = bundle
        try:
            for k in path[:-1]:
                parent = parent[k]
            action = data.draw(st.sampled_from(["delete", "replace"]))
            if action == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = data.draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue
    _check(bundle)


def test_pathologically_deep_json():
    deep = "[" * 100_000 + "]" * 100_000
    for text in (deep, '{"resourceType": "Bundle", "type": "collection", "entry": ' + deep + "}"):
        _check(text)
