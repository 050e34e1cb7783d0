"""Transparency against the real Synapse: ``!mod stats`` counts what the moderators and the bot
did; ``!mod stats publish`` posts to the transparency room and a second publish supersedes the
first (both kept); ``abusebot report`` renders the three formats from the same ledger while the
bot runs, and a real browser (headless Chromium, when installed) draws the HTML."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from abusebot.transparency import current_half
from tests.integration.cases_helpers import command
from tests.integration.test_cases import from_bot, start_case
from tests.integration.test_loop import ledger_query, wait_until

FLOOD = {"flood": {"max_messages": 3, "per_seconds": 30, "cross_room_max_messages": 50}}


def report(w: World, period: str, fmt: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "abusebot",
            "report",
            "-c",
            str(w.config_path),
            "--period",
            period,
            "--format",
            fmt,
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_stats_publish_supersede_and_the_report_in_three_formats(synapse: SynapseServer, tmp_path: Path) -> None:
    w = await World.create(synapse, tmp_path, rooms=2, members=("member", "spammer"))
    try:
        bot_id = w.bot_account.user_id
        member, spammer = w.members["member"], w.members["spammer"]
        meta = w.protected[1]
        w.write_config(
            {"protections": FLOOD, "transparency": {"publish_room": meta, "min_count": 1}, "notify_users": True}
        )
        await w.mod.start_watching()
        await w.start_bot()
        half = current_half().label

        await command(w, f"!mod warn {member.user_id} be kind")
        await command(w, f"!mod ban {spammer.user_id} 1h spamming")
        await start_case(member, bot_id, "hello moderators, a question")
        for i in range(4):  # a flood in the other room: the bot's own action
            await w.mod.say(w.protected[0], f"announcement {i}")  # a moderator is exempt
        third = w.person("third")
        await third.join(w.protected[0])
        for i in range(4):
            await third.say(w.protected[0], f"flood {i}")

        async def flood_handled() -> bool:
            rows = ledger_query(w, "SELECT COUNT(*) FROM infractions WHERE origin = 'protection'")
            return bool(rows[0][0])

        await wait_until(flood_handled, 30, "the flood handled")

        stats = await command(w, "!mod stats")
        assert f"Statistics for {half} (so far)" in stats
        assert "Reports received: 1" in stats
        assert "by ModMail: 1" in stats
        assert "Actions: moderation team: 2" in stats
        assert "temporary ban: 1" in stats
        assert "Actions: automatic (protections, policy lists): 1" in stats
        assert "removed messages: 4" in stats
        for person in (member, spammer, third):
            assert person.user_id not in stats
        assert "usage" in (await command(w, "!mod stats 2026H3")).lower()

        first = await command(w, f"!mod stats publish {half}")
        assert "snapshot #1" in first
        post = await w.mod.wait_for(meta, from_bot(bot_id, f"Moderation statistics for {half} (snapshot #1)"), 20)
        assert "Reports received: 1" in post["content"]["body"]
        assert "<table>" in post["content"]["formatted_body"]
        second = await command(w, f"!mod stats publish {half}")
        assert "supersedes #1" in second
        await w.mod.wait_for(meta, from_bot(bot_id, "Correction", "snapshot #2 supersedes #1"), 20)
        rows = ledger_query(
            w, "SELECT id, period, supersedes_id, published_event IS NOT NULL FROM transparency_snapshots"
        )
        assert rows == [(1, half, None, 1), (2, half, 1, 1)]

        # The report, while the bot runs, from the same ledger.
        texts = {}
        for fmt in ("md", "html", "json"):
            out = tmp_path / f"report.{fmt}"
            done = report(w, half, fmt, out)
            assert done.returncode == 0, done.stderr
            assert "reading the ledger" in done.stderr
            texts[fmt] = out.read_text(encoding="utf-8")
        for text in texts.values():
            for person in (member, spammer, third, w.mod):
                assert person.user_id not in text
            assert not re.search(r"[!$][\w-]+:[\w.-]+", text)
        assert f"# Transparency report: {half}" in texts["md"]
        data = json.loads(texts["json"])
        assert data["schema_version"] == 1
        assert data["figures"]["reports"]["by_channel"]["modmail"] == 1
        assert data["figures"]["actions"]["team"]["warning"] == 1
        assert not re.search(r"""(src|href)=["']?https?:""", texts["html"])  # self-contained
        assert "<svg" in texts["html"]
        bad = report(w, "someday", "md", tmp_path / "x.md")
        assert bad.returncode == 2
        assert "--period" in bad.stderr

        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            pytest.skip("no Chromium here to look at the HTML report with")
        shot = tmp_path / "report.png"
        for width in (1000, 390):  # a desktop and a phone
            looked = await asyncio.to_thread(
                subprocess.run,
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    f"--window-size={width},2400",
                    f"--screenshot={shot}",
                    (tmp_path / "report.html").as_uri(),
                ],
                capture_output=True,
                timeout=120,
                check=False,
            )
            assert looked.returncode == 0, looked.stderr[-500:]
            assert shot.stat().st_size > 20_000  # drawn: tables and charts, not a blank page
        dom = await asyncio.to_thread(
            subprocess.run,
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--dump-dom",
                (tmp_path / "report.html").as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "Transparency report" in dom.stdout
        assert "<svg" in dom.stdout
    finally:
        await w.close()
