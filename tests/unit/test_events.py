from __future__ import annotations

from typing import Any

import pytest

from abusebot.events import MAX_INT, MAX_TEXT, Event, parse_event

ROOM = "!lobby:example.org"


def raw(**changes: Any) -> dict[str, Any]:
    """A well-formed raw text message, with ``changes`` applied (``...`` deletes a key)."""
    event: dict[str, Any] = {
        "event_id": "$event",
        "sender": "@spammer:example.org",
        "type": "m.room.message",
        "origin_server_ts": 1700000000000,
        "content": {"msgtype": "m.text", "body": "hello"},
    }
    for key, value in changes.items():
        if value is ...:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def parsed(event: Any) -> Event:
    """parse_event's result, which must not be None."""
    result = parse_event(event, ROOM)
    assert result is not None
    return result


class TestWellFormed:
    def test_text_message(self) -> None:
        """A normal text message is parsed with its fields and nothing malformed."""
        event = parsed(raw())
        assert (event.event_id, event.sender, event.body, event.msgtype, event.malformed) == (
            "$event",
            "@spammer:example.org",
            "hello",
            "m.text",
            (),
        )

    def test_room_id_comes_from_the_caller(self) -> None:
        """The room id is the one the sync response filed the event under, not a field of the event."""
        assert parsed(raw(room_id="!other:example.org")).room_id == ROOM

    def test_membership_with_previous_membership(self) -> None:
        """Member events expose membership, displayname and the previous membership from unsigned."""
        event = parsed(
            raw(
                type="m.room.member",
                state_key="@spammer:example.org",
                content={"membership": "join", "displayname": "Spammer"},
                unsigned={"prev_content": {"membership": "invite"}},
            )
        )
        assert (event.membership, event.displayname, event.prev_membership, event.is_state) == (
            "join",
            "Spammer",
            "invite",
            True,
        )

    def test_text_joins_body_and_formatted_body(self) -> None:
        """Event.text holds both renderings, so HTML-only spam is seen."""
        event = parsed(raw(content={"msgtype": "m.text", "body": "a", "formatted_body": "<b>b</b>"}))
        assert event.text == "a\n<b>b</b>"


class TestUnaddressable:
    @pytest.mark.parametrize("key", ["event_id", "sender", "type"])
    def test_missing_identity_field(self, key: str) -> None:
        """Without event_id, sender or type an event cannot be acted on: None."""
        assert parse_event(raw(**{key: ...}), ROOM) is None

    @pytest.mark.parametrize("key", ["event_id", "sender", "type"])
    @pytest.mark.parametrize("value", [None, 12, ["$x"], {"id": "$x"}, True])
    def test_wrongly_typed_identity_field(self, key: str, value: Any) -> None:
        """A non-string event_id, sender or type gives None."""
        assert parse_event(raw(**{key: value}), ROOM) is None

    @pytest.mark.parametrize("event", [None, "event", 42, ["$event"], b"{}"])
    def test_event_that_is_not_a_mapping(self, event: Any) -> None:
        """Anything but a mapping gives None."""
        assert parse_event(event, ROOM) is None


class TestHostileContent:
    @pytest.mark.parametrize("body", [12, 1.5, True, ["spam"], {"text": "spam"}, None])
    def test_body_of_wrong_type(self, body: Any) -> None:
        """A non-string body is dropped and recorded as malformed, while formatted_body is still read."""
        event = parsed(raw(content={"msgtype": "m.text", "body": body, "formatted_body": "<a>spam</a>"}))
        assert (event.body, event.formatted_body, event.malformed) == (None, "<a>spam</a>", ("body",))

    @pytest.mark.parametrize("content", ["spam", ["spam"], 42, True])
    def test_content_of_wrong_type(self, content: Any) -> None:
        """Content that is not a mapping becomes empty and is recorded as malformed."""
        event = parsed(raw(content=content))
        assert (dict(event.content), event.malformed) == ({}, ("content", "msgtype"))

    def test_content_null_or_missing_is_empty(self) -> None:
        """A null or missing content is an empty mapping (as after a redaction), not malformed content."""
        assert [parsed(raw(content=c)).malformed for c in (None, ...)] == [("msgtype",), ("msgtype",)]

    def test_message_without_msgtype_is_malformed(self) -> None:
        """An m.room.message without msgtype is flagged."""
        assert parsed(raw(content={"body": "hi"})).malformed == ("msgtype",)

    def test_several_wrong_fields_are_all_recorded(self) -> None:
        """Every wrongly typed field is listed, in order."""
        event = parsed(raw(origin_server_ts="now", state_key=5, content={"body": 1, "msgtype": 2}))
        assert event.malformed == ("origin_server_ts", "state_key", "body", "msgtype")

    @pytest.mark.parametrize("ts", ["1700000000000", True, False, -1, 2**60, MAX_INT + 1, 1.7e12, None])
    def test_bad_timestamps_become_zero(self, ts: Any) -> None:
        """A timestamp that is not an integer in [0, 2^53 - 1] becomes 0 and is flagged."""
        event = parsed(raw(origin_server_ts=ts))
        assert (event.origin_server_ts, event.malformed) == (0, ("origin_server_ts",))

    def test_largest_valid_timestamp_is_kept(self) -> None:
        """The largest canonical JSON integer is a valid timestamp."""
        assert parsed(raw(origin_server_ts=MAX_INT)).origin_server_ts == MAX_INT

    @pytest.mark.parametrize("state_key", [0, 7, ["@x:y"], {"k": "v"}, True])
    def test_non_string_state_key(self, state_key: Any) -> None:
        """A non-string state_key is dropped (the event is not state) and flagged."""
        event = parsed(raw(state_key=state_key))
        assert (event.state_key, event.is_state, event.malformed) == (None, False, ("state_key",))

    def test_empty_state_key_is_state(self) -> None:
        """An empty string state_key is a real state key."""
        assert parsed(raw(type="m.room.topic", state_key="", content={"topic": "x"})).is_state

    def test_huge_body_is_truncated(self) -> None:
        """A 200 KB body is cut to MAX_TEXT characters for inspection."""
        event = parsed(raw(content={"msgtype": "m.text", "body": "a" * 200_000, "formatted_body": "b" * 200_000}))
        assert (len(event.body or ""), len(event.formatted_body or "")) == (MAX_TEXT, MAX_TEXT)

    def test_wrong_membership_type(self) -> None:
        """A member event whose membership is not a string has no membership and is flagged."""
        event = parsed(raw(type="m.room.member", state_key="@x:example.org", content={"membership": ["join"]}))
        assert (event.membership, event.malformed) == (None, ("membership",))

    @pytest.mark.parametrize("unsigned", ["x", {"prev_content": "x"}, {"prev_content": {"membership": 1}}])
    def test_bad_unsigned_prev_content_is_ignored(self, unsigned: Any) -> None:
        """A malformed unsigned.prev_content yields no previous membership and no error."""
        event = parsed(
            raw(type="m.room.member", state_key="@x:example.org", content={"membership": "join"}, unsigned=unsigned)
        )
        assert event.prev_membership is None


class TestRedactions:
    def test_redacts_in_content(self) -> None:
        """Room v11+: the redacted event id is read from content."""
        event = parsed(raw(type="m.room.redaction", content={"redacts": "$target"}))
        assert event.redacts == "$target"

    def test_redacts_at_top_level(self) -> None:
        """Older room versions: the redacted event id is read from the top level."""
        event = parsed(raw(type="m.room.redaction", content={}, redacts="$target"))
        assert event.redacts == "$target"

    def test_content_wins_over_top_level(self) -> None:
        """When both are present the v11 content field is used."""
        event = parsed(raw(type="m.room.redaction", content={"redacts": "$new"}, redacts="$old"))
        assert event.redacts == "$new"

    @pytest.mark.parametrize("value", [12, ["$target"], None, {"id": "$target"}])
    def test_non_string_redacts_is_ignored(self, value: Any) -> None:
        """A non-string redacts target is ignored."""
        event = parsed(raw(type="m.room.redaction", content={"redacts": value}))
        assert event.redacts is None


def test_a_threads_falling_back_reply_is_no_reply() -> None:
    """In a thread, clients point ``m.in_reply_to`` at the thread's latest message and mark it
    ``is_falling_back``: that is the thread, not a reply (a ``!report`` there reports no one)."""
    from abusebot.events import relation

    thread = {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": True, "m.in_reply_to": {"event_id": "$x"}}
    assert relation({"m.relates_to": thread}) == ("$root", None)
    assert relation({"m.relates_to": {**thread, "is_falling_back": False}}) == ("$root", "$x")
    assert relation({"m.relates_to": {"m.in_reply_to": {"event_id": "$y"}}}) == (None, "$y")
    assert relation({"m.relates_to": {"m.in_reply_to": {"event_id": 5}, "rel_type": "m.thread"}}) == (None, None)
    assert relation({"m.relates_to": "nonsense"}) == (None, None)
