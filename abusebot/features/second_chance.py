"""The second chance, as the community's moderation policy has it: a member banned permanently
may ask for one after ``second_chance.after`` (a month) banned; the staff decide by a vote; a
granted one means probation for ``second_chance.probation`` (a month), where any violation means a
permanent ban; everyone gets only one, ever; and no record is ever removed.

* **The request**, in the member's direct chat: ``second chance <why…>``. Each is kept (an
  ineligible one too, with why). Not eligible — no permanent ban in force, banned for less than
  ``after`` (or denied less than ``after`` ago), a second chance granted before — gets a polite
  answer saying why, and the date they may ask when it is only too early. An eligible one opens a
  case (kind ``second_chance``, its thread in the management room) and a vote "Give <user> a
  second chance?"; the member is told it is under consideration.
* **The decision** is the vote's. Passed: off our published list, unbanned everywhere (the bans
  are *lifted*, not pardoned: they still count on the ladder), probation recorded until a date (a
  durable job ends it), the member told the terms. Otherwise: told politely.
* **Probation.** A violation a protection finds means a permanent ban at once (the ladder's
  top, :mod:`abusebot.escalation`). ``!mod warn|mute|kick|ban`` on a probationer is answered that
  the only sanction now is a permanent ban, decided by ``!mod vote violation <user> <what…>``: a
  vote "Did <user> violate a rule?" whose passing bans them permanently. After probation the
  normal ladder applies, with the whole history.

Durability, in order: the request is recorded (keyed by its event), then the case, then the vote
(keyed by the request); a decision is recorded before it is carried out, each step keyed, and
marked done after (a crash anywhere runs the rest again at the next start, or with the vote's
job, and each step finds what it did).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import structlog

from abusebot.actions import Actor, Scope
from abusebot.audit import Message, when
from abusebot.cases import Case, NewCase, strip_invisible
from abusebot.commands import Authorized, Parsed, text_message
from abusebot.config import SecondChanceConfig
from abusebot.durations import format_duration
from abusebot.events import Event
from abusebot.features.cases import CasesFeature, MemberRequest, lines_message
from abusebot.features.votes import Vote, VoteError, VotesFeature
from abusebot.host import Feature, feature
from abusebot.ledger import Infraction, Job, now_ms

log = structlog.get_logger("abusebot.second_chance")

#: ``second chance <why…>`` (also "second-chance", any case, a colon after it).
_REQUEST = re.compile(r"^\s*second[\s-]+chance\b[\s:,.!-]*(?P<why>.*)$", re.IGNORECASE | re.DOTALL)
MAX_STATEMENT = 2000
SANCTIONS = ("warn", "mute", "kick", "ban")
TEAM = "— the moderation team"

MIGRATIONS = (
    """
    CREATE TABLE second_chances (
        id                 INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id            TEXT NOT NULL,
        requested_at       INTEGER NOT NULL,
        source_key         TEXT NOT NULL UNIQUE,
        statement          TEXT NOT NULL,
        state              TEXT NOT NULL CHECK (state IN ('ineligible','voting','granted','denied')),
        refusal            TEXT,
        ban_id             INTEGER,
        case_id            INTEGER,
        vote_id            INTEGER UNIQUE,
        decided_at         INTEGER,
        lifted_at          INTEGER,
        probation_until    INTEGER,
        probation_outcome  TEXT CHECK (probation_outcome IN ('completed','violated')),
        CHECK ((state IN ('granted','denied')) = (decided_at IS NOT NULL)),
        CHECK ((state = 'granted') = (probation_until IS NOT NULL)),
        CHECK ((state = 'ineligible') = (refusal IS NOT NULL))
    );
    CREATE INDEX second_chances_by_user ON second_chances (user_id, id);
    -- One second chance ever; one request under consideration at a time.
    CREATE UNIQUE INDEX second_chances_one_granted ON second_chances (user_id) WHERE state = 'granted';
    CREATE UNIQUE INDEX second_chances_one_voting ON second_chances (user_id) WHERE state = 'voting';
    CREATE TRIGGER second_chances_never_deleted BEFORE DELETE ON second_chances
    BEGIN SELECT RAISE(ABORT, 'second chances are never deleted'); END;
    CREATE TRIGGER second_chances_identity_frozen
    BEFORE UPDATE OF id, user_id, requested_at, source_key, statement, refusal, ban_id, case_id ON second_chances
    BEGIN SELECT RAISE(ABORT, 'a second chance''s request cannot change'); END;
    CREATE TRIGGER second_chances_decision_final
    BEFORE UPDATE OF state, decided_at, probation_until ON second_chances
    WHEN OLD.state <> 'voting'
    BEGIN SELECT RAISE(ABORT, 'a second chance''s decision is final'); END;
    CREATE TRIGGER second_chances_probation_final BEFORE UPDATE OF probation_outcome ON second_chances
    WHEN OLD.probation_outcome IS NOT NULL
    BEGIN SELECT RAISE(ABORT, 'a probation''s outcome is final'); END;
    """,
)

_COLUMNS = (
    "id, user_id, requested_at, source_key, statement, state, refusal, ban_id, case_id, vote_id, decided_at,"
    " lifted_at, probation_until, probation_outcome"
)


@attrs.frozen
class Request:
    """One row of ``second_chances``: a request, and what became of it."""

    id: int
    user_id: str
    requested_at: int
    source_key: str
    statement: str
    state: str
    refusal: str | None
    ban_id: int | None
    case_id: int | None
    vote_id: int | None
    decided_at: int | None
    lifted_at: int | None
    probation_until: int | None
    probation_outcome: str | None


def parse_request(text: str) -> str | None:
    """The reason of ``second chance <why…>`` (``""`` when none is given), or ``None`` when the
    text is not such a request."""
    found = _REQUEST.match(strip_invisible(text))
    return None if found is None else found.group("why").strip()


def _asks(text: str) -> bool:
    return parse_request(text) is not None


def _day(ms: int) -> str:
    return when(ms).split(" ", 1)[0]


@attrs.frozen
class Eligibility:
    """Whether a member may ask now: the permanent ban they ask about, or why not."""

    ban: Infraction | None
    refusal: str | None = None


class SecondChanceFeature(Feature):
    """Second-chance requests, their votes, probation."""

    name: ClassVar[str] = "second_chance"
    migrations: ClassVar[tuple[str, ...]] = MIGRATIONS

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self.config: SecondChanceConfig = bot.config.second_chance
        self.ledger = bot.ledger
        self._on_probation = 0

    @property
    def cases(self) -> CasesFeature:
        """The cases feature (a request is a case)."""
        found = self.bot.host.features["cases"]
        assert isinstance(found, CasesFeature)
        return found

    @property
    def votes(self) -> VotesFeature:
        """The votes feature (a request is decided by a vote)."""
        found = self.bot.host.features["votes"]
        assert isinstance(found, VotesFeature)
        return found

    async def start(self) -> None:
        """Hook into cases, votes and commands; finish what a crash cut short (a request with no
        vote yet, a decision not carried out) and give every probation its end job."""
        self.cases.requests.append(MemberRequest("second_chance", _asks, self.request, self._root, self._ack))
        self.votes.on_result["second_chance"] = self.decided
        self.votes.on_result["violation"] = self.violation_decided
        self.votes.openers["violation"] = self.open_violation_vote
        self.bot.commands.guard(SANCTIONS, self._only_a_ban)
        self.bot.commands.history_notes.append(self.history_lines)
        self.bot.scheduler.register("probation_end", self._probation_end, "ending a probation")
        # A crash between a request and its vote: the vote now. (A decision not carried out
        # runs again with its vote's closing job, which stays pending until it is.)
        for row in await self._select("state = 'voting' AND vote_id IS NULL"):
            await self._open_vote(row)
        await self._count()

    def status(self) -> list[str]:
        """How many members are on probation."""
        return [f"Probation: {self._on_probation} member(s)"] if self._on_probation else []

    async def _count(self) -> None:
        rows = await self.ledger.fetch(
            "SELECT COUNT(*) FROM second_chances WHERE state = 'granted' AND probation_until > ?", (now_ms(),)
        )
        self._on_probation = int(rows[0][0])

    # -- the store -----------------------------------------------------------------------------

    async def _select(self, where: str, args: Sequence[Any] = ()) -> list[Request]:
        rows = await self.ledger.fetch(f"SELECT {_COLUMNS} FROM second_chances WHERE {where}", args)
        return [Request(*row) for row in rows]

    async def _one(self, where: str, args: Sequence[Any] = ()) -> Request | None:
        found = await self._select(where + " LIMIT 1", args)
        return found[0] if found else None

    async def granted(self, user: str) -> Request | None:
        """``user``'s second chance, when they had one."""
        return await self._one("user_id = ? AND state = 'granted'", (user,))

    async def on_probation(self, user: str) -> Request | None:
        """``user``'s second chance while its probation lasts."""
        return await self._one("user_id = ? AND state = 'granted' AND probation_until > ?", (user, now_ms()))

    # -- the request ---------------------------------------------------------------------------

    async def eligibility(self, user: str) -> Eligibility:
        """May ``user`` ask now? A granted second chance is final; then a permanent ban in force,
        held for ``after``; a denied request waits ``after`` from its decision."""
        had = await self.granted(user)
        if had is not None:
            return Eligibility(
                None,
                f"You were given a second chance on {_day(had.decided_at or had.requested_at)}, and the community "
                "gives only one. This is final; the moderators will not consider another request.",
            )
        bans = [inf for inf in await self.ledger.active(user, "ban") if inf.permanent]
        if not bans:
            return Eligibility(
                None,
                "A second chance is for members banned permanently, and you have no permanent ban in force. "
                "To contest a decision, write: appeal #<number> <why…>",
            )
        ban = min(bans, key=lambda inf: inf.created_at)
        after = self.config.after_s * 1000
        from_ = ban.created_at + after
        why = (
            f"you may ask after {format_duration(self.config.after_s)} banned, and your ban began on"
            f" {_day(ban.created_at)}"
        )
        denied = await self._one("user_id = ? AND state = 'denied' ORDER BY decided_at DESC", (user,))
        if denied is not None and (denied.decided_at or 0) + after > from_:
            from_ = (denied.decided_at or 0) + after
            why = f"your last request was declined on {_day(denied.decided_at or 0)}"
        if now_ms() < from_:
            return Eligibility(
                None, f"It is too early to ask for a second chance: {why}. You may ask from {when(from_)}."
            )
        return Eligibility(ban)

    async def request(self, event: Event, user: str, text: str) -> None:
        """``second chance <why…>`` from ``user`` in their direct chat (idempotent per event)."""
        room, key = event.room_id, f"case-answer:{event.event_id}"
        row = await self._one("source_key = ?", (event.event_id,))
        if row is None:
            why = parse_request(text) or ""
            if not why:
                await self.cases.tell(
                    None, user, room, lines_message("Please add why you ask: second chance <why…>"), key
                )
                return
            under = await self._one("user_id = ? AND state = 'voting'", (user,))
            if under is not None:
                await self.cases.tell(
                    None,
                    user,
                    room,
                    lines_message(
                        f"Your request for a second chance (case #{under.case_id}) is already being considered."
                    ),
                    key,
                )
                return
            verdict = await self.eligibility(user)
            row = await self._record(event, user, why[:MAX_STATEMENT], verdict)
            if row is None:  # another request of theirs opened its case first: that one is considered
                await self.cases.tell(
                    None,
                    user,
                    room,
                    lines_message("Your request for a second chance is already being considered."),
                    key,
                )
                return
        if row.state == "ineligible":
            await self.cases.tell(None, user, room, lines_message(row.refusal or "", TEAM), key)
            return
        if row.vote_id is None:
            await self._open_vote(row)
        case = await self.cases.cases.get(row.case_id or 0)
        if case is not None:
            await self.cases.announce(case)

    async def _record(self, event: Event, user: str, why: str, verdict: Eligibility) -> Request | None:
        """Keep the request (an ineligible one with why), and open its case when it is eligible."""
        at = now_ms()
        if verdict.ban is None:
            async with self.ledger.transaction() as db:
                await db.execute(
                    "INSERT OR IGNORE INTO second_chances (user_id, requested_at, source_key, statement, state,"
                    " refusal) VALUES (?, ?, ?, ?, 'ineligible', ?)",
                    (user, at, event.event_id, why, verdict.refusal),
                )
            await self.ledger.audit(
                actor=user,
                action="second_chance_request",
                outcome="refused",
                subject=user,
                reason=verdict.refusal,
                event_id=event.event_id,
            )
            log.info("second_chance_ineligible", user=user)
            return await self._one("source_key = ?", (event.event_id,))
        try:
            case, _ = await self.cases.cases.open_case(
                NewCase(
                    "second_chance",
                    "modmail",
                    user,
                    source_key=event.event_id,
                    chat_room=event.room_id,
                    infraction_id=verdict.ban.id,
                    appeal_reason=why,
                ),
                (event.event_id, user, "user", f"second chance {why}"),
            )
            async with self.ledger.transaction() as db:
                await db.execute(
                    "INSERT OR IGNORE INTO second_chances (user_id, requested_at, source_key, statement, state, ban_id,"
                    " case_id) VALUES (?, ?, ?, ?, 'voting', ?, ?)",
                    (user, at, event.event_id, why, verdict.ban.id, case.id),
                )
        except sqlite3.IntegrityError:
            return None
        await self.ledger.audit(
            actor=user, action="second_chance_request", outcome="done", subject=user, event_id=event.event_id
        )
        log.info("second_chance_requested", user=user, case=case.id)
        return await self._one("source_key = ?", (event.event_id,))

    async def _open_vote(self, row: Request) -> Vote | None:
        try:
            vote = await self.votes.open_vote(
                "second_chance",
                f"Give {row.user_id} a second chance?",
                "second chance",
                self.votes.config.default_duration_s,
                f"second-chance:{row.id}",
                subject=row.user_id,
                case_id=row.case_id,
            )
        except VoteError as err:  # tried again at the next start
            log.error("second_chance_vote_not_opened", request=row.id, error=str(err))
            return None
        async with self.ledger.transaction() as db:
            await db.execute(
                "UPDATE second_chances SET vote_id = ? WHERE id = ? AND vote_id IS NULL", (vote.id, row.id)
            )
        return vote

    async def _root(self, case: Case) -> Message:
        row = await self._one("case_id = ?", (case.id,))
        ban = await self.ledger.get_infraction(case.infraction_id) if case.infraction_id is not None else None
        history = await self.ledger.history(case.opener, limit=500)
        counted = [inf for inf in history if inf.kind in ("warning", "mute", "kick", "ban") and inf.state != "failed"]
        banned = (
            f"banned permanently since {when(ban.created_at)} (decision #{ban.id}: {ban.reason or 'no reason given'})"
            if ban is not None
            else "banned"
        )
        vote = f"vote #{row.vote_id} decides it (see the poll)." if row and row.vote_id else "its vote is not open yet."
        return lines_message(
            f"🔁 Second chance — case #{case.id}: {case.opener} asks for one; {banned}.",
            f"Their record: {len(counted)} sanction(s) in all (!mod history {case.opener}).",
            f"Their request: «{(case.appeal_reason or '')[:1500]}»",
            f"Staff {vote} Passed: unbanned everywhere and on probation for"
            f" {format_duration(self.config.probation_s)}. Answer them in this thread with"
            f" {self.bot.config.command_prefix} reply <text…>.",
        )

    def _ack(self, case: Case) -> Message:
        return lines_message(
            f"Your request for a second chance is case #{case.id}. The moderators will consider it and vote on it;"
            " you will be told their decision here.",
        )

    # -- the decision --------------------------------------------------------------------------

    async def decided(self, vote: Vote) -> None:
        """A second-chance vote closed: record the decision, then carry it out (each step keyed,
        run again until it is done)."""
        row = await self._one("vote_id = ?", (vote.id,))
        if row is None or vote.open:
            return
        if row.state == "voting":
            granted = vote.state == "passed"
            at = now_ms()
            async with self.ledger.transaction() as db:
                if granted:
                    until = at + self.config.probation_s * 1000
                    await db.execute(
                        "UPDATE second_chances SET state = 'granted', decided_at = ?, probation_until = ?"
                        " WHERE id = ? AND state = 'voting'",
                        (at, until, row.id),
                    )
                    await db.execute(
                        "INSERT INTO probation (user_id, until) VALUES (?, ?)"
                        " ON CONFLICT (user_id) DO UPDATE SET until = excluded.until",
                        (row.user_id, until),
                    )
                else:
                    await db.execute(
                        "UPDATE second_chances SET state = 'denied', decided_at = ? WHERE id = ? AND state = 'voting'",
                        (at, row.id),
                    )
                await self.ledger.audit_in(  # with the decision, or not at all
                    db,
                    actor=f"vote #{vote.id}",
                    action="second_chance_decided",
                    outcome="done",
                    subject=row.user_id,
                    reason="granted" if granted else "denied",
                    detail={"request": row.id, "case": row.case_id, "vote": vote.id},
                )
            log.info("second_chance_decided", user=row.user_id, vote=vote.id, granted=granted)
            fresh = await self._one("id = ?", (row.id,))
            assert fresh is not None
            row = fresh
        if row.state == "granted":
            await self._grant(row, vote)
        else:
            await self._deny(row, vote)
        await self._count()

    async def _grant(self, row: Request, vote: Vote) -> None:
        assert row.probation_until is not None
        if row.probation_outcome is None:  # (a rerun after the probation ended adds no second end)
            await self.ledger.add_job("probation_end", str(row.id), row.probation_until)
            self.bot.scheduler.wake.set()
        management = self.bot.store.management_id
        if row.lifted_at is None:
            await self._lift_forgiven(row, vote)
        still = await self._still_banned(row)
        others = self.bot.policies.ban_rules("user", row.user_id) if self.bot.policies is not None else []
        if row.case_id is not None:
            await self.cases.cases.close(row.case_id, "granted", f"vote #{vote.id}", "", None)
        case = await self.cases.cases.get(row.case_id or 0)
        unbanned = (
            f"The ban is lifted except in {', '.join(still)}, where it could not be lifted yet; the moderators know."
            if still
            else "You are no longer banned and may rejoin."
        )
        terms = lines_message(
            f"Your request for a second chance (case #{row.case_id}) was granted. {unbanned}",
            f"For {format_duration(self.config.probation_s)}, until {when(row.probation_until)}, you are on probation:"
            " breaking any rule in that time means a permanent ban, and there is no further second chance.",
            "After that you are a member like any other; your earlier record stays, and the moderators take it into"
            " account.",
            TEAM,
        )
        await self.cases.tell(
            case, row.user_id, case.chat_room if case else None, terms, f"second-chance-told:{row.id}"
        )
        line = (
            f"🔁 Second chance granted to {row.user_id} (case #{row.case_id}, vote #{vote.id}): on probation until"
            f" {when(row.probation_until)}; "
            + (
                f"⚠️ still banned in {', '.join(still)}: I could not unban them there, lift it by hand;"
                if still
                else "unbanned everywhere, and"
            )
            + " they were told the terms."
        )
        if others:
            line += (
                f" ⚠️ A watched policy list still bans them ({others[0].list_room}): they will be banned again"
                " unless it changes."
            )
        await self.bot.outbox.do(
            self.bot.moderation.send_intent(management, text_message(line), key=f"second-chance:{row.id}", mentions=[])
        )

    async def _lift_forgiven(self, row: Request, vote: Vote) -> None:
        """Lift the bans the second chance forgives — those from before the decision — off our
        list first (else it bans them again), then on the homeserver; marked done last. A later
        ban (a probation violation while a retry waited) is never lifted, nor its rooms unbanned."""
        store, decided = self.bot.store, row.decided_at or 0
        bans = await self.ledger.active(row.user_id, "ban")
        later = [inf for inf in bans if inf.created_at > decided]
        reason = f"second chance granted (vote #{vote.id})"
        actor = Actor(f"vote #{vote.id}", "system", f"second-chance:{row.id}")
        if later:
            # Banned again already: the forgiven records are closed, the rooms stay banned.
            for inf in bans:
                if inf.created_at <= decided:
                    await self.ledger.update_infraction(
                        inf.id, state="lifted", actor=actor.name, reason=reason, cancel_jobs=True
                    )
        else:
            if self.bot.policies is not None:
                await self.bot.policies.unpublish(row.user_id)
            banned = any(store.room(room).memberships().get(row.user_id) == "ban" for room in store.protected)
            if banned or bans:
                outcome = await self.bot.moderation.unban(row.user_id, reason, actor, Scope.everywhere(store))
                if not outcome.ok:  # the vote's job runs this again, with backoff, and says so
                    raise RuntimeError(f"second chance #{row.id}: the unban failed: {outcome.summary}")
        async with self.ledger.transaction() as db:
            await db.execute(
                "UPDATE second_chances SET lifted_at = ? WHERE id = ? AND lifted_at IS NULL", (now_ms(), row.id)
            )

    async def _still_banned(self, row: Request) -> list[str]:
        """The rooms where the member is still banned after the lift (the bot lacks the power
        there), unless a later ban of theirs is why."""
        bans = await self.ledger.active(row.user_id, "ban")
        if any(inf.created_at > (row.decided_at or 0) for inf in bans):
            return []
        store, moderation = self.bot.store, self.bot.moderation
        return [
            store.label(room) for room in store.protected if await moderation.membership(room, row.user_id) == "ban"
        ]

    async def _deny(self, row: Request, vote: Vote) -> None:
        if row.case_id is not None:
            await self.cases.cases.close(row.case_id, "denied", f"vote #{vote.id}", vote.state, None)
        case = await self.cases.cases.get(row.case_id or 0)
        told = lines_message(
            f"The moderators considered your request for a second chance (case #{row.case_id}) and decided not to"
            " grant it now; your ban stays in force.",
            f"You may ask again after {format_duration(self.config.after_s)}.",
            TEAM,
        )
        await self.cases.tell(case, row.user_id, case.chat_room if case else None, told, f"second-chance-told:{row.id}")

    # -- probation -----------------------------------------------------------------------------

    async def _only_a_ban(self, parsed: Parsed, auth: Authorized, actor: Actor) -> Message | None:
        """``!mod warn|mute|kick|ban`` on a probationer: the only sanction now is a permanent
        ban, and a vote decides it."""
        if parsed.user is None:
            return None
        row = await self.on_probation(parsed.user)
        if row is None:
            return None
        prefix = self.bot.config.command_prefix
        return text_message(
            f"⛔ {parsed.user} is on probation after a second chance (until {when(row.probation_until or 0)}): the"
            f" only sanction now is a permanent ban, decided by a staff vote. Open it with {prefix} vote violation"
            f" {parsed.user} <what they did…>"
        )

    async def open_violation_vote(self, parsed: Parsed, actor: Actor) -> Message:
        """``!mod vote violation <user> <what…>``: "Did <user> violate a rule?"."""
        user = parsed.user
        assert user is not None
        assert actor.event_id is not None
        row = await self.on_probation(user)
        if row is None:
            raise VoteError(f"{user} is not on probation: the ladder applies (warn, mute, ban)")
        vote = await self.votes.open_vote(
            "violation",
            f"Did {user} violate a rule? {parsed.reason}",
            actor.name,
            self.votes.config.default_duration_s,
            actor.event_id,
            subject=user,
            case_id=row.case_id,
        )
        return text_message(
            f"✅ vote #{vote.id} is open until {when(vote.closes_at)}: did {user} violate a rule during probation?"
            f" Passed: a permanent ban. {vote.electorate_size} electors, quorum {vote.needed}."
        )

    async def violation_decided(self, vote: Vote) -> None:
        """A violation vote closed: passed means a permanent ban everywhere, and a violated
        probation; a probation that ended while it was open ends now."""
        if vote.subject is None:
            return
        user = vote.subject
        if vote.state == "passed":
            await self._ban_for_violation(vote, user)
            async with self.ledger.transaction() as db:
                await db.execute(
                    "UPDATE second_chances SET probation_outcome = 'violated'"
                    " WHERE user_id = ? AND state = 'granted' AND probation_outcome IS NULL",
                    (user,),
                )
        row = await self.granted(user)
        if row is not None and row.probation_outcome is None and (row.probation_until or 0) <= now_ms():
            await self._finish_probation(row)
        await self._count()

    async def _ban_for_violation(self, vote: Vote, user: str) -> None:
        """The vote's permanent ban, until one is in force: each attempt is its own record (a
        failed one stays in the ledger as failed), the next one made under a fresh key."""
        rows = await self.ledger.fetch(
            "SELECT state FROM infractions WHERE subject = ? AND kind = 'ban' AND source_event LIKE ?",
            (user, f"vote-violation:{vote.id}:%"),
        )
        states = [str(state) for (state,) in rows]
        if any(state not in ("failed", "pending") for state in states):
            return
        attempt = states.count("failed")  # a pending one (a crash) is the same key: resumed
        detail = vote.question.split("?", 1)[-1].strip()
        reason = f"probation violation (vote #{vote.id})" + (f": {detail}" if detail else "")
        actor = Actor(f"vote #{vote.id}", "system", f"vote-violation:{vote.id}:{attempt}")
        ladder = self.bot.commands.ladder
        outcome = await self.bot.moderation.ban(
            user, reason, actor, Scope.everywhere(self.bot.store), level=ladder.top if ladder else None
        )
        if not outcome.ok and not outcome.refused:  # the vote's job runs this again, and says so
            raise RuntimeError(f"vote #{vote.id}: the ban failed: {outcome.summary}")
        if outcome.ok and self.bot.policies is not None and self.bot.policies.publish_room is not None:
            await self.bot.policies.publish_ban(user, reason)

    async def _probation_end(self, job: Job) -> bool:
        row = await self._one("id = ?", (int(job.key),)) if job.key.isdigit() else None
        if row is None or row.probation_until is None:
            return True
        if row.probation_outcome is None:
            waiting = await self.ledger.fetch(
                "SELECT id FROM votes WHERE kind = 'violation' AND subject = ? AND state = 'open' LIMIT 1",
                (row.user_id,),
            )
            if waiting:  # a violation vote decides first; its closing ends the probation
                log.info("probation_end_waits", request=row.id, vote=int(waiting[0][0]))
                return True
        await self._finish_probation(row)
        return True

    async def _finish_probation(self, row: Request) -> None:
        """Record how the probation went (once: final), then say so (each post keyed: once)."""
        if row.probation_outcome is None:
            # Violated when anything was held against them in the time (a protection's ban,
            # a vote's, a moderator's): the record says so for good.
            rows = await self.ledger.fetch(
                "SELECT id FROM infractions WHERE subject = ? AND kind IN ('warning','mute','kick','ban')"
                " AND state NOT IN ('pending','failed','pardoned') AND created_at >= ? AND created_at <= ?"
                " ORDER BY id LIMIT 1",
                (row.user_id, row.decided_at or 0, row.probation_until or 0),
            )
            async with self.ledger.transaction() as db:
                await db.execute(
                    "UPDATE second_chances SET probation_outcome = ? WHERE id = ? AND probation_outcome IS NULL",
                    ("violated" if rows else "completed", row.id),
                )
            fresh = await self._one("id = ?", (row.id,))
            assert fresh is not None
            row = fresh
        management = self.bot.store.management_id
        completed = row.probation_outcome == "completed"
        line = f"⏱️ The probation of {row.user_id} (second chance, case #{row.case_id}) ended: " + (
            "completed; the normal ladder applies now, with their whole history." if completed else "violated."
        )
        await self.bot.outbox.do(
            self.bot.moderation.send_intent(management, text_message(line), key=f"probation-end:{row.id}", mentions=[])
        )
        if completed:
            case = await self.cases.cases.get(row.case_id or 0)
            told = lines_message(
                "Your probation is over: from now on you are a member like any other. Your earlier record stays, and"
                " the moderators take it into account.",
                TEAM,
            )
            await self.cases.tell(
                case, row.user_id, case.chat_room if case else None, told, f"probation-end-told:{row.id}"
            )
        await self._count()

    async def history_lines(self, user: str) -> list[str]:
        """``!mod history``: each second-chance request and the probation."""
        lines = []
        for row in await self._select("user_id = ? ORDER BY id", (user,)):
            asked = _day(row.requested_at)
            if row.state == "ineligible":
                lines.append(f"Second chance asked {asked}: not eligible.")
            elif row.state == "voting":
                lines.append(f"Second chance asked {asked} (case #{row.case_id}): vote #{row.vote_id} under way.")
            elif row.state == "denied":
                lines.append(f"Second chance asked {asked} (case #{row.case_id}): denied by vote #{row.vote_id}.")
            else:
                until = row.probation_until or 0
                if row.probation_outcome is not None:
                    probation = f"probation until {when(until)}: {row.probation_outcome}"
                elif until > now_ms():
                    probation = f"ON PROBATION until {when(until)}"
                else:
                    probation = f"probation until {when(until)}"
                lines.append(
                    f"Second chance granted {_day(row.decided_at or 0)} (case #{row.case_id}, vote #{row.vote_id});"
                    f" {probation}. No further second chance."
                )
        return lines


@feature("second_chance")
def build(bot: Any) -> Feature:
    """Second chances and probation."""
    return SecondChanceFeature(bot)
