"""Reading a big JSON array one item at a time (a policy list's state)."""

from __future__ import annotations

import json

import pytest

from abusebot.matrix import iter_json_array


@pytest.mark.parametrize(
    "items",
    [
        [],
        [{}],
        [{"a": [1, 2, {"b": "]"}]}, "x", 3, None],
        [{"type": "m.policy.rule.user", "content": {"e": "é\u2028"}}],
    ],
)
def test_every_item_comes_out_as_json_loads_would_give_it(items: list[object]) -> None:
    """Any array, compact or indented: the items are the ones ``json.loads`` reads."""
    for text in (json.dumps(items), json.dumps(items, indent=2)):
        assert list(iter_json_array(text.encode())) == items


@pytest.mark.parametrize("body", [b"", b"{}", b'{"errcode": "M_FORBIDDEN"}', b"not json", b"[1, 2,", b"[1, {"])
def test_a_body_that_is_not_a_whole_array_gives_what_it_can_and_never_raises(body: bytes) -> None:
    """Not an array: nothing; a cut-off array: the items before the cut, and no exception."""
    items = list(iter_json_array(body))
    assert items in ([], [1], [1, 2])


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    """Bytes that are not UTF-8 inside a string become U+FFFD; the rest of the array is read."""
    assert list(iter_json_array(b'["a\xff", "b"]')) == ["a\ufffd", "b"]
