"""Tenant JSON is refused where it enters when later code could not write it back."""

from __future__ import annotations

import json

import pytest

from isolate import jsondata


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("1e999", "out of range"),
        ("-1e400", "out of range"),
        ("NaN", "NaN is not a JSON number"),
        ("[Infinity]", "Infinity is not a JSON number"),
        ("[" * 65 + "]" * 65, "nested deeper than 64"),
        ('{"a":' * 65 + "1" + "}" * 65, "nested deeper than 64"),
        ("[" * 200_000, "nested deeper than"),
        ("{", "Expecting property name"),
        (b"\xff", "can't decode"),
    ],
)
def test_refused(text: str | bytes, why: str) -> None:
    with pytest.raises(jsondata.JsonDataError, match=why):
        jsondata.loads(text)


def test_accepted_values_round_trip_through_strict_dumps() -> None:
    text = json.dumps({"a": [1.5, -2, 1e308, None, "x"], "b": [[[]]] * 3, "c": 10**30})
    value = jsondata.loads(text)
    assert json.loads(json.dumps(value, allow_nan=False)) == value
    assert jsondata.loads("[" * 64 + "]" * 64) is not None


def test_the_depth_cap_is_configurable() -> None:
    jsondata.check_depth([[1]], max_depth=2)
    with pytest.raises(jsondata.JsonDataError):
        jsondata.check_depth([[[1]]], max_depth=2)
