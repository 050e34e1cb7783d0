"""Staff votes, as the community's moderation policy has them: at least ``min_duration``
(1 hour), at most ``max_duration`` (48 hours), a week (``rules_duration``) for rules or
policies; a quorum of ``quorum`` (60 %) of the electorate, "no opinion" counting; decided by
majority.

* The **electorate** is snapshotted when a vote opens: the management room's members at or above
  ``moderator_power_level``, minus the bot.
* A vote is a **poll** in the management room (``org.matrix.msc3381.poll.start``, disclosed,
  Yes / No / No opinion) whose text says ``vote #N`` and the question. An elector answers the
  poll, or types ``!mod ballot <N> yes|no|abstain``; their latest ballot counts. Every ballot is
  kept; one from anyone else counts for nothing and is audited.
* It **closes** at its deadline (a durable job: a restart does not lose it), or earlier once
  every elector has voted and ``min_duration`` has passed. ``passed``: ballots ≥
  ceil(quorum × electorate) and yes > no; ``failed``: the quorum met otherwise; ``no quorum``
  else. The result is recorded, final (a trigger), then the poll is ended and the result posted.

Other features open votes of their own kinds (:meth:`VotesFeature.open_vote`) and hear their
results (:attr:`VotesFeature.on_result`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

import attrs
import structlog

from abusebot.actions import Actor
from abusebot.audit import Message, bullet_list, when
from abusebot.cases import strip_invisible
from abusebot.commands import USER_ID, Authorized, CommandHandler, Parsed, Spec, UsageError, number_word, text_message
from abusebot.config import VotesConfig
from abusebot.durations import DurationError, format_duration, parse_duration
from abusebot.events import Event
from abusebot.host import Feature, Role, feature
from abusebot.ledger import Job, now_ms
from abusebot.outbox import intent

log = structlog.get_logger("abusebot.votes")

KINDS = ("general", "rules", "second_chance", "violation")
CHOICES = ("yes", "no", "abstain")
#: A poll answer emptied or spoiled (an option the poll does not have), or redacted: the
#: elector's earlier ballot no longer counts (MSC3381: the latest response is the vote).
WITHDRAWN = "withdrawn"
ANSWERS = (("yes", "Yes"), ("no", "No"), ("abstain", "No opinion"))
POLL_START = "org.matrix.msc3381.poll.start"
POLL_RESPONSES = ("org.matrix.msc3381.poll.response", "m.poll.response")
POLL_END = "org.matrix.msc3381.poll.end"
TEXT = "org.matrix.msc1767.text"
MAX_QUESTION = 500

MIGRATIONS = (
    """
    CREATE TABLE votes (
        id                 INTEGER PRIMARY KEY AUTOINCREMENT,
        kind               TEXT NOT NULL CHECK (kind IN ('general','rules','second_chance','violation')),
        question           TEXT NOT NULL,
        opened_by          TEXT NOT NULL,
        opened_at          INTEGER NOT NULL,
        earliest_close_at  INTEGER NOT NULL,
        closes_at          INTEGER NOT NULL,
        electorate_size    INTEGER NOT NULL CHECK (electorate_size > 0),
        quorum             REAL NOT NULL,
        needed             INTEGER NOT NULL,
        source_key         TEXT NOT NULL UNIQUE,
        subject            TEXT,
        case_id            INTEGER,
        poll_event         TEXT,
        state              TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open','passed','failed','no quorum')),
        closed_at          INTEGER,
        yes                INTEGER,
        no                 INTEGER,
        abstain            INTEGER,
        CHECK ((state = 'open') = (closed_at IS NULL))
    );
    CREATE INDEX votes_by_state ON votes (state, id);
    CREATE UNIQUE INDEX votes_by_poll ON votes (poll_event) WHERE poll_event IS NOT NULL;
    CREATE TRIGGER votes_never_deleted BEFORE DELETE ON votes
    BEGIN SELECT RAISE(ABORT, 'votes are never deleted'); END;
    CREATE TRIGGER votes_identity_frozen
    BEFORE UPDATE OF id, kind, question, opened_by, opened_at, earliest_close_at, closes_at, electorate_size,
        quorum, needed, source_key, subject, case_id ON votes
    BEGIN SELECT RAISE(ABORT, 'a vote''s terms cannot change'); END;
    CREATE TRIGGER votes_result_final BEFORE UPDATE OF state, closed_at, yes, no, abstain ON votes
    WHEN OLD.state <> 'open'
    BEGIN SELECT RAISE(ABORT, 'a vote''s result is final'); END;

    CREATE TABLE vote_electorate (
        vote_id  INTEGER NOT NULL REFERENCES votes (id),
        user_id  TEXT NOT NULL,
        PRIMARY KEY (vote_id, user_id)
    ) WITHOUT ROWID;
    CREATE TRIGGER vote_electorate_frozen BEFORE DELETE ON vote_electorate
    BEGIN SELECT RAISE(ABORT, 'an electorate is never changed'); END;

    CREATE TABLE ballots (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        vote_id   INTEGER NOT NULL REFERENCES votes (id),
        voter     TEXT NOT NULL,
        choice    TEXT NOT NULL CHECK (choice IN ('yes','no','abstain','withdrawn')),
        at        INTEGER NOT NULL,
        event_id  TEXT UNIQUE,
        counted   INTEGER NOT NULL CHECK (counted IN (0, 1))
    );
    CREATE INDEX ballots_by_vote ON ballots (vote_id, voter, at, id);
    CREATE TRIGGER ballots_never_changed BEFORE UPDATE ON ballots
    BEGIN SELECT RAISE(ABORT, 'a ballot cannot change'); END;
    CREATE TRIGGER ballots_never_deleted BEFORE DELETE ON ballots
    BEGIN SELECT RAISE(ABORT, 'ballots are never deleted'); END;
    """,
)

_COLUMNS = (
    "id, kind, question, opened_by, opened_at, earliest_close_at, closes_at, electorate_size, quorum, needed,"
    " source_key, subject, case_id, poll_event, state, closed_at, yes, no, abstain"
)


@attrs.frozen
class Vote:
    """One row of ``votes``."""

    id: int
    kind: str
    question: str
    opened_by: str
    opened_at: int
    earliest_close_at: int
    closes_at: int
    electorate_size: int
    quorum: float
    needed: int
    source_key: str
    subject: str | None
    case_id: int | None
    poll_event: str | None
    state: str
    closed_at: int | None
    yes: int | None
    no: int | None
    abstain: int | None

    @property
    def open(self) -> bool:
        """True until the vote is closed."""
        return self.state == "open"


@attrs.frozen
class Tally:
    """The counted ballots of a vote (each elector's latest)."""

    yes: int = 0
    no: int = 0
    abstain: int = 0

    @property
    def total(self) -> int:
        """Ballots counted, "no opinion" included."""
        return self.yes + self.no + self.abstain


def needed_for(quorum: float, electorate: int) -> int:
    """Ballots a quorum needs: ceil(quorum × electorate), without float noise (0.6 × 5 is 3)."""
    return max(1, math.ceil(round(quorum * electorate, 9)))


def result_of(tally: Tally, needed: int) -> str:
    """``passed``, ``failed`` or ``no quorum``."""
    if tally.total < needed:
        return "no quorum"
    return "passed" if tally.yes > tally.no else "failed"


class VoteError(Exception):
    """A vote that cannot be opened (no electorate, say); the message says why."""


ResultHook = Callable[[Vote], Awaitable[None]]
#: Opens a vote of another feature's kind from ``!mod vote <kind> <user> <what…>``: the reply.
Opener = Callable[[Parsed, Actor], Awaitable[Message]]
#: The kinds ``!mod vote`` opens for other features, by the word that names them.
OPENED_BY_WORD = ("violation",)


class VotesFeature(Feature):
    """Votes in the management room: polls, ballots, durable deadlines, final results."""

    name: ClassVar[str] = "votes"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.MANAGEMENT})
    event_types: ClassVar[frozenset[str] | None] = frozenset({*POLL_RESPONSES, "m.room.redaction"})
    migrations: ClassVar[tuple[str, ...]] = MIGRATIONS

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self.config: VotesConfig = bot.config.votes
        self.ledger = bot.ledger
        #: vote kind → what runs when a vote of that kind closes (after its result is recorded).
        self.on_result: dict[str, ResultHook] = {}
        #: vote kind → what ``!mod vote <kind> <user> <what…>`` opens (another feature's votes).
        self.openers: dict[str, Opener] = {}
        self._open = 0

    async def start(self) -> None:
        """Register the deadline jobs; give every open vote its job and its poll (a crash may
        have come between them)."""
        self.bot.scheduler.register("vote_close", self._close_job, "closing a vote")
        for vote in await self._select("state = 'open'"):
            # Every open vote has its deadline job (a crash between the vote and its job left
            # none), and its poll.
            await self.ledger.add_job("vote_close", str(vote.id), vote.closes_at)
            if vote.poll_event is None:
                await self._post_poll(vote)
        await self._count()

    def status(self) -> list[str]:
        """Open votes."""
        return [f"Votes: {self._open} open"] if self._open else []

    async def _count(self) -> None:
        rows = await self.ledger.fetch("SELECT COUNT(*) FROM votes WHERE state = 'open'")
        self._open = int(rows[0][0])

    # -- the store -----------------------------------------------------------------------------

    async def _select(self, where: str, args: Sequence[Any] = ()) -> list[Vote]:
        rows = await self.ledger.fetch(f"SELECT {_COLUMNS} FROM votes WHERE {where}", args)
        return [Vote(*row) for row in rows]

    async def get(self, vote_id: int) -> Vote | None:
        """Vote number ``vote_id``."""
        found = await self._select("id = ?", (vote_id,))
        return found[0] if found else None

    async def electorate(self, vote_id: int) -> list[str]:
        """The electors of a vote, as snapshotted when it opened."""
        rows = await self.ledger.fetch(
            "SELECT user_id FROM vote_electorate WHERE vote_id = ? ORDER BY user_id", (vote_id,)
        )
        return [str(user) for (user,) in rows]

    async def tally(self, vote_id: int, db: Any = None) -> tuple[Tally, set[str]]:
        """Each elector's latest counted ballot — the one *given* last (the event's time, not the
        order the bot read them in) — and who has voted (a withdrawn ballot is no vote)."""
        sql = (
            "SELECT voter, choice FROM ballots b WHERE vote_id = ? AND counted = 1 AND id = "
            "(SELECT id FROM ballots WHERE vote_id = b.vote_id AND voter = b.voter AND counted = 1"
            " ORDER BY at DESC, id DESC LIMIT 1)"
        )
        if db is None:
            rows = await self.ledger.fetch(sql, (vote_id,))
        else:
            async with db.execute(sql, (vote_id,)) as cursor:
                rows = await cursor.fetchall()
        counts = dict.fromkeys((*CHOICES, WITHDRAWN), 0)
        for _, choice in rows:
            counts[str(choice)] += 1
        voted = {str(voter) for voter, choice in rows if choice != WITHDRAWN}
        return Tally(counts["yes"], counts["no"], counts["abstain"]), voted

    # -- opening -------------------------------------------------------------------------------

    def duration_for(self, rules: bool, asked_s: int | None) -> int:
        """The length of a vote: ``asked_s`` within the bounds, or the default; raises
        :class:`VoteError` for one out of bounds."""
        cfg = self.config
        low, high = cfg.min_duration_s, cfg.rules_duration_s if rules else cfg.max_duration_s
        if asked_s is None:
            return cfg.rules_duration_s if rules else cfg.default_duration_s
        if not low <= asked_s <= high:
            raise VoteError(
                f"a {'rules ' if rules else ''}vote lasts from {format_duration(low)} to {format_duration(high)}"
            )
        return asked_s

    async def open_vote(
        self,
        kind: str,
        question: str,
        opened_by: str,
        duration_s: int,
        source_key: str,
        subject: str | None = None,
        case_id: int | None = None,
    ) -> Vote:
        """Open a vote (once per ``source_key``: a replay finds it), snapshot its electorate,
        schedule its deadline and post its poll."""
        existing = await self._select("source_key = ?", (source_key,))
        if existing:
            vote = existing[0]
        else:
            electors = self.bot.moderation.staff.moderators()
            if not electors:
                raise VoteError("there is no one to vote: no moderator is in the management room")
            at = now_ms()
            needed = needed_for(self.config.quorum, len(electors))
            async with self.ledger.transaction() as db:
                cursor = await db.execute(
                    "INSERT INTO votes (kind, question, opened_by, opened_at, earliest_close_at, closes_at,"
                    " electorate_size, quorum, needed, source_key, subject, case_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        kind,
                        question[:MAX_QUESTION],
                        opened_by,
                        at,
                        at + 1000 * min(self.config.min_duration_s, duration_s),
                        at + 1000 * duration_s,
                        len(electors),
                        self.config.quorum,
                        needed,
                        source_key,
                        subject,
                        case_id,
                    ),
                )
                vote_id = int(cursor.lastrowid or 0)
                await db.executemany(
                    "INSERT INTO vote_electorate (vote_id, user_id) VALUES (?, ?)", [(vote_id, u) for u in electors]
                )
            found = await self.get(vote_id)
            assert found is not None
            vote = found
            await self.ledger.audit(
                actor=opened_by, action="vote_open", outcome="done", detail={"vote": vote.id, "kind": kind}
            )
            log.info("vote_opened", vote=vote.id, kind=kind, electorate=len(electors), needed=needed)
        await self.ledger.add_job("vote_close", str(vote.id), vote.closes_at)
        self.bot.scheduler.wake.set()
        if vote.poll_event is None:
            await self._post_poll(vote)
        await self._count()
        return vote

    async def _post_poll(self, vote: Vote) -> None:
        text = f"vote #{vote.id}: {vote.question}"
        ends = when(vote.closes_at)
        fallback = "\n".join([text, *(f"{n}. {label}" for n, (_, label) in enumerate(ANSWERS, 1)), f"(closes {ends})"])
        content = {
            POLL_START: {
                "kind": "org.matrix.msc3381.poll.disclosed",
                "max_selections": 1,
                "question": {TEXT: text, "body": text},
                "answers": [{"id": answer, TEXT: label} for answer, label in ANSWERS],
            },
            TEXT: fallback,
            "body": fallback,
            "m.mentions": {},
        }
        management = self.bot.store.management_id
        new = intent("send", management, key=f"vote-poll:{vote.id}", event_type=POLL_START, content=content)
        result = await self.bot.outbox.do(new)
        if not result.ok:  # a recorded failure is final for its key: a fresh attempt, a minute apart
            retry = f"vote-poll:{vote.id}:{now_ms() // 60_000}"
            result = await self.bot.outbox.do(attrs.evolve(new, key=retry))
        event_id = result.value.get("event_id") if result.ok else None
        if isinstance(event_id, str):
            async with self.ledger.transaction() as db:
                await db.execute(
                    "UPDATE votes SET poll_event = ? WHERE id = ? AND poll_event IS NULL", (event_id, vote.id)
                )
        else:
            log.warning("vote_poll_failed", vote=vote.id, error=result.error)

    # -- ballots -------------------------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        """A poll response in the management room: a ballot, when it answers one of our polls
        (a redacted one withdraws it)."""
        if event.type == "m.room.redaction":
            await self.withdraw_redacted(event)
            return
        relates = event.content.get("m.relates_to")
        poll = relates.get("event_id") if isinstance(relates, Mapping) else None
        if not isinstance(poll, str):
            return
        found = await self._select("poll_event = ?", (poll,))
        if not found:
            return
        body = event.content.get(event.type) or event.content.get("org.matrix.msc3381.poll.response")
        answers = body.get("answers") if isinstance(body, Mapping) else None
        if answers is None and isinstance(body, Mapping):
            answers = body.get("m.selections")
        if answers is None:
            answers = event.content.get("m.selections")
        if not isinstance(answers, list):
            return  # malformed: no ballot at all
        # Single choice: the first answer; none, or one the poll does not have, withdraws.
        choice = answers[0] if answers and answers[0] in CHOICES else WITHDRAWN
        await self.cast(found[0], event.sender, str(choice), event.event_id, at=event.origin_server_ts)

    async def withdraw_redacted(self, event: Event) -> None:
        """A redacted poll answer: the elector's ballot it was no longer counts."""
        if not event.redacts:
            return
        rows = await self.ledger.fetch("SELECT id, vote_id, voter FROM ballots WHERE event_id = ?", (event.redacts,))
        if not rows or str(rows[0][2]) != event.sender:
            return
        ballot_id, vote_id = int(rows[0][0]), int(rows[0][1])
        latest = await self.ledger.fetch(
            "SELECT id FROM ballots WHERE vote_id = ? AND voter = ? AND counted = 1 ORDER BY at DESC, id DESC LIMIT 1",
            (vote_id, event.sender),
        )
        if not latest or int(latest[0][0]) != ballot_id:
            return  # an answer they changed since: their ballot now is another one
        vote = await self.get(vote_id)
        if vote is not None:
            await self.cast(vote, event.sender, WITHDRAWN, event.event_id, at=event.origin_server_ts)

    async def cast(self, vote: Vote, voter: str, choice: str, event_id: str, at: int | None = None) -> bool:
        """Record a ballot (once per event) given at ``at`` (its event's server time; never
        later than now, so no ballot can outrank the ones after it); True when it counts: an
        elector's, given before the deadline, while the result is not recorded. Closes the vote
        early when every elector has voted and the minimum time is over."""
        electors = await self.electorate(vote.id)
        given = min(at, now_ms()) if at else now_ms()
        elector = voter in electors
        async with self.ledger.transaction() as db:
            # Counted or not is decided in the same write that checks the vote is still open:
            # a ballot cannot slip in after the result was counted.
            cursor = await db.execute(
                "INSERT OR IGNORE INTO ballots (vote_id, voter, choice, at, event_id, counted)"
                " SELECT id, ?, ?, ?, ?, CASE WHEN state = 'open' AND ? AND ? < closes_at THEN 1 ELSE 0 END"
                " FROM votes WHERE id = ?",
                (voter, choice, given, event_id, int(elector), given, vote.id),
            )
            new = cursor.rowcount == 1
            async with db.execute("SELECT counted FROM ballots WHERE event_id = ?", (event_id,)) as rows:
                row = await rows.fetchone()
        counts = bool(row and row[0])
        if not counts:
            if new:
                why = "not an elector" if not elector else "given after the vote closed"
                await self.ledger.audit(
                    actor=voter,
                    action="ballot",
                    outcome="ignored",
                    reason=why,
                    event_id=event_id,
                    detail={"vote": vote.id},
                )
            return False
        _, voted = await self.tally(vote.id)
        if len(voted) < vote.electorate_size:
            # Someone withdrew after all had voted: the vote runs to its deadline again.
            async with self.ledger.transaction() as db:
                await db.execute(
                    "UPDATE jobs SET due_at = ?, next_attempt_at = ? WHERE kind = 'vote_close' AND key = ?"
                    " AND state = 'pending' AND due_at < ?",
                    (vote.closes_at, vote.closes_at, str(vote.id), vote.closes_at),
                )
        else:
            # Everyone has voted: close at once, or as soon as the minimum time is over.
            at = max(now_ms(), vote.earliest_close_at)
            if at < vote.closes_at:
                async with self.ledger.transaction() as db:  # one change: never no job at all
                    await db.execute(
                        "UPDATE jobs SET due_at = ?, next_attempt_at = ? WHERE kind = 'vote_close' AND key = ?"
                        " AND state = 'pending' AND due_at > ?",
                        (at, at, str(vote.id), at),
                    )
                self.bot.scheduler.wake.set()
        return True

    # -- closing -------------------------------------------------------------------------------

    async def _close_job(self, job: Job) -> bool:
        vote = await self.get(int(job.key)) if job.key.isdigit() else None
        if vote is None:
            return True
        # After a start, not before the first sync is read: ballots given while the bot was down
        # arrive with it, and count when given before the deadline.
        for _ in range(120):
            if not vote.open or self.bot.last_sync_at is not None:
                break
            await asyncio.sleep(0.5)
        return await self.close(vote)

    async def close(self, vote: Vote) -> bool:
        """Record the result (once: final), then end the poll and post the result (keyed: a
        crash in between posts them at the next run of the job), then the kind's hook."""
        if vote.open:
            async with self.ledger.transaction() as db:
                # Counted and recorded in one write: no ballot lands between the two.
                tally, _ = await self.tally(vote.id, db)
                result = result_of(tally, vote.needed)
                await db.execute(
                    "UPDATE votes SET state = ?, closed_at = ?, yes = ?, no = ?, abstain = ?"
                    " WHERE id = ? AND state = 'open'",
                    (result, now_ms(), tally.yes, tally.no, tally.abstain, vote.id),
                )
            await self.ledger.audit(
                actor="votes",
                action="vote_close",
                outcome="done",
                reason=result,
                detail={"vote": vote.id, **attrs.asdict(tally)},
            )
            log.info("vote_closed", vote=vote.id, result=result, **attrs.asdict(tally))
            closed = await self.get(vote.id)
            assert closed is not None
            vote = closed
        line = self.result_line(vote)
        management = self.bot.store.management_id
        rows = []
        if vote.poll_event is not None:
            end = {
                "m.relates_to": {"rel_type": "m.reference", "event_id": vote.poll_event},
                TEXT: line.plain,
                "body": line.plain,
            }
            rows.append(intent("send", management, key=f"vote-end:{vote.id}", event_type=POLL_END, content=end))
        rows.append(self.bot.moderation.send_intent(management, line, key=f"vote-result:{vote.id}", mentions=[]))
        results = await self.bot.outbox.do_all(rows)
        for row, outcome in zip(rows, results, strict=True):
            if not outcome.ok:  # the result stands (recorded); a post that failed is said in the log
                log.error("vote_post_failed", vote=vote.id, key=row.key, error=outcome.error)
        hook = self.on_result.get(vote.kind)
        if hook is not None:
            await hook(vote)  # at least once: a hook finds what an earlier run of it did
        await self._count()
        return True

    def result_line(self, vote: Vote) -> Message:
        """``vote #N passed: 3 yes, 1 no, 1 no opinion; 5 of 5 electors voted (quorum 3)``."""
        counted = (vote.yes or 0) + (vote.no or 0) + (vote.abstain or 0)
        plain = (
            f"🗳️ vote #{vote.id} {vote.state}: {vote.yes or 0} yes, {vote.no or 0} no, {vote.abstain or 0} no opinion;"
            f" {counted} of {vote.electorate_size} electors voted (quorum {vote.needed}). {vote.question}"
        )
        return text_message(plain)

    # -- commands ------------------------------------------------------------------------------

    def commands(self) -> Sequence[Spec]:
        """``vote``, ``votes``, ``ballot``: management room only."""
        cfg = self.config
        return [
            Spec(
                "vote",
                "vote open [--rules] [--duration D] <question…> | vote violation <user> <what…> | vote <N>",
                f"Open a staff vote (a poll; {format_duration(cfg.default_duration_s)} by default,"
                f" {format_duration(cfg.min_duration_s)} to {format_duration(cfg.max_duration_s)};"
                f" --rules: a vote on rules or policies, {format_duration(cfg.rules_duration_s)});"
                " violation: did a member on probation break a rule (passed: a permanent ban); or show one.",
                _parse_vote,
                self._vote,
                room_admins=False,
                scoped=False,
            ),
            Spec("votes", "votes", "The open votes.", _parse_votes, self._votes, room_admins=False, scoped=False),
            Spec(
                "ballot",
                "ballot <N> yes|no|abstain",
                "Vote (instead of answering the poll); your latest ballot counts.",
                _parse_ballot,
                self._ballot,
                room_admins=False,
                scoped=False,
            ),
        ]

    async def _vote(self, handler: CommandHandler, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        if parsed.words[0] == "show":
            vote = await self._vote_or_usage(int(parsed.words[1]))
            return await self._details(vote)
        if parsed.words[0] in OPENED_BY_WORD:
            opener = self.openers.get(parsed.words[0])
            if opener is None:
                raise UsageError("vote", f"there are no {parsed.words[0]} votes here")
            try:
                return await opener(parsed, actor)
            except VoteError as err:
                raise UsageError("vote", str(err)) from err
        rules = "--rules" in parsed.words
        try:
            duration = self.duration_for(rules, parsed.duration_s)
            assert actor.event_id is not None
            vote = await self.open_vote(
                "rules" if rules else "general", parsed.reason, actor.name, duration, actor.event_id
            )
        except VoteError as err:
            raise UsageError("vote", str(err)) from err
        return text_message(
            f"✅ vote #{vote.id} is open until {when(vote.closes_at)}: {vote.electorate_size} electors,"
            f" quorum {vote.needed}."
        )

    async def _vote_or_usage(self, number: int) -> Vote:
        vote = await self.get(number)
        if vote is None:
            raise UsageError("vote", f"there is no vote #{number}")
        return vote

    async def _details(self, vote: Vote) -> Message:
        if not vote.open:
            return self.result_line(vote)
        tally, voted = await self.tally(vote.id)
        missing = vote.electorate_size - len(voted)
        return text_message(
            f"vote #{vote.id} ({vote.kind}), open until {when(vote.closes_at)}: {tally.yes} yes, {tally.no} no,"
            f" {tally.abstain} no opinion; {missing} of {vote.electorate_size} electors have not voted"
            f" (quorum {vote.needed}). {vote.question}"
        )

    async def _votes(self, handler: CommandHandler, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        votes = await self._select("state = 'open' ORDER BY id")
        lines = [f"vote #{v.id} ({v.kind}) until {when(v.closes_at)}: {v.question}" for v in votes]
        return bullet_list(f"{len(votes)} open vote(s)" + (":" if votes else "."), lines, limit=50)

    async def _ballot(self, handler: CommandHandler, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        vote = await self._vote_or_usage(int(parsed.words[0]))
        choice = parsed.words[1]
        assert actor.event_id is not None
        if not vote.open:
            return text_message(f"⛔ vote #{vote.id} is closed ({vote.state}); your ballot does not count.")
        if await self.cast(vote, actor.name, choice, actor.event_id, at=actor.at):
            label = dict(ANSWERS)[choice]
            return text_message(f"✅ Your ballot on vote #{vote.id}: {label}.")
        if actor.name in await self.electorate(vote.id):
            return text_message(f"⛔ vote #{vote.id} closed before your ballot; it does not count.")
        return text_message(
            f"⛔ You are not an elector of vote #{vote.id} (its electors are the moderators when it opened);"
            " your ballot is recorded but does not count."
        )


def _number(word: str, command: str) -> int:
    return number_word(word, command, "a vote number")


def _parse_vote(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    if not args:
        raise UsageError(name, "open a vote, or give its number")
    if args[0].lower() in OPENED_BY_WORD:
        if len(args) < 2:
            raise UsageError(name, f"vote {args[0].lower()} <user> <what they did…>")
        user = args[1]
        if not USER_ID.fullmatch(user):
            raise UsageError(name, f"{user[:60]!r} is not a user id like @someone:example.org")
        what = strip_invisible(" ".join(args[2:])).strip()
        if not what:
            raise UsageError(name, "say what they did: it is the question's detail")
        return Parsed(name, user=user, words=(args[0].lower(),), reason=what[:MAX_QUESTION])
    if args[0].lower() != "open":
        if len(args) != 1:
            raise UsageError(name, f"unknown sub-command {args[0][:30]!r}")
        return Parsed(name, words=("show", str(_number(args[0], name))))
    rest = args[1:]
    rules = False
    duration: int | None = None
    while rest and rest[0].startswith("--"):
        flag = rest.pop(0)
        if flag == "--rules":
            rules = True
        elif flag == "--duration":
            if not rest:
                raise UsageError(name, "--duration needs a duration like 2h or 1d")
            try:
                duration = parse_duration(rest.pop(0))
            except DurationError as err:
                raise UsageError(name, str(err)) from err
        else:
            raise UsageError(name, f"vote open takes --rules and --duration, not {flag[:30]!r}")
    question = strip_invisible(" ".join(rest)).strip()
    if not question:
        raise UsageError(name, "what is the question?")
    words = ("open", "--rules") if rules else ("open",)
    return Parsed(name, words=words, duration_s=duration, reason=question[:MAX_QUESTION])


def _parse_votes(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    if args:
        raise UsageError(name, "votes takes nothing more")
    return Parsed(name)


def _parse_ballot(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    if len(args) != 2 or args[1].lower() not in CHOICES:
        raise UsageError(name, "which vote, and yes, no or abstain?")
    return Parsed(name, words=(str(_number(args[0], name)), args[1].lower()))


@feature("votes")
def build(bot: Any) -> Feature:
    """Staff votes."""
    return VotesFeature(bot)
