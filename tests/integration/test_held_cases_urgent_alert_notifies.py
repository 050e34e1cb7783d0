"""README: "Write `@moderators` … every moderator is notified at once" — "an urgent alert that
mentions every moderator (pills and `m.mentions`)". The alert is sent as an ``m.notice``, and
the default push rules of every Matrix account put ``.m.rule.suppress_notices`` (dont_notify)
before ``.m.rule.is_user_mention``: so the mention never notifies anyone."""

from __future__ import annotations

import asyncio
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.cases_helpers import from_bot, highlights


async def test_an_urgent_mention_really_notifies_every_moderator(synapse: SynapseServer, tmp_path: Path) -> None:
    w = await World.create(synapse, tmp_path, members=("member",))
    try:
        bot_id, room = w.bot_account.user_id, w.protected[0]
        member = w.members["member"]
        await w.mod.start_watching()
        await w.start_bot()
        await member.say(room, "@moderators a raid is starting, help!")
        alert = await w.mod.wait_for(w.management, from_bot(bot_id, "Urgent — case #"), timeout=20)
        assert w.mod.user_id in alert["content"]["m.mentions"]["user_ids"]  # the bot means to ping
        await asyncio.sleep(2)
        notified = [n for n in await highlights(w.mod) if n["event"]["event_id"] == alert["event_id"]]
        assert notified, (
            f"the moderator got no notification for the urgent alert (msgtype {alert['content']['msgtype']!r})"
        )
    finally:
        await w.close()
