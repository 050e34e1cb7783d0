"""``abusebot demo``: a scripted scenario on a throwaway Synapse, printed as a moderator sees it.

It starts Synapse on a free loopback port in a temporary directory, registers a bot, a
moderator and a spammer, creates a management room and a protected room, and runs the bot. The
spammer posts an evasive spam phrase, which the bot removes and warns about on its own; the
moderator bans them for 15 seconds and asks for their history; the ban lifts itself on time.
Then it prints the management room and cleans up.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from abusebot import logs
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World, body_contains

BAN_SECONDS = 15


def say(text: str) -> None:
    """Narrate a step of the demo."""
    print(f"==> {text}", flush=True)


async def scenario(synapse: SynapseServer, base: Path) -> int:
    """Play the scripted scenario; return the exit status."""
    config = {
        "logging": {"format": "console", "level": "error"},
        "protections": {"spam": {"banned_words": ["buy cheap crypto"]}},
    }
    world = await World.create(synapse, base, config=config)
    try:
        spammer = world.members["spammer"]
        room = world.protected[0]
        say(f"moderator {world.mod.user_id}, spammer {spammer.user_id}, bot {world.bot_account.user_id}")
        await world.mod.start_watching()
        say("starting abusebot")
        await world.start_bot()

        say("the spammer posts 'bυy ch\u200beap crypto' (a Greek υ and a zero-width space, to evade filters)")
        spam = await spammer.say(room, "bυy ch\u200beap crypto, DM me")
        await world.mod.wait_for(
            room,
            lambda e: e.get("type") == "m.room.redaction" and spam in (e.get("redacts"), e["content"].get("redacts")),
        )
        await world.mod.wait_for(world.management, body_contains("Warned", spammer.user_id))
        say("the bot removed the message at once, then warned the spammer (first rung of the ladder)")
        say(f"the moderator bans the spammer for {BAN_SECONDS}s")
        ban = await world.mod.say(world.management, f"!mod ban {spammer.user_id} {BAN_SECONDS}s crypto spam")
        await world.mod.wait_for_reply(world.management, ban)
        membership = await world.mod.membership(room, spammer.user_id)
        say(f"spammer's membership in the protected room: {membership}")

        say("the moderator asks for the spammer's history")
        history = await world.mod.say(world.management, f"!mod history {spammer.user_id}")
        await world.mod.wait_for_reply(world.management, history)

        say(f"waiting for the ban to expire (about {BAN_SECONDS}s)")
        started = time.monotonic()
        await world.mod.wait_for(world.management, body_contains("Unbanned", "expired"), timeout=BAN_SECONDS + 60)
        membership = await world.mod.membership(room, spammer.user_id)
        say(f"ban lifted after {time.monotonic() - started:.1f}s; spammer's membership now: {membership}")

        print("\n----- what the moderators saw in the management room -----")
        for event in world.mod.seen.get(world.management, []):
            content = event.get("content") or {}
            if event.get("type") != "m.room.message" or not isinstance(content.get("body"), str):
                continue
            who = "abusebot" if event["sender"] == world.bot_account.user_id else event["sender"]
            print(f"[{who}] {content['body']}\n")
        print("----- end -----")
        ok = membership == "leave"
        say("demo finished: the ban was applied, recorded, and lifted on time" if ok else "demo FAILED")
        return 0 if ok else 1
    finally:
        await world.close()


def main(keep: bool = False) -> int:
    """Run the demo; ``keep`` leaves the temporary directory in place for inspection."""
    logs.configure("console", "error")
    base = Path(tempfile.mkdtemp(prefix="abusebot-demo-"))
    say(f"starting a throwaway Synapse in {base}")
    synapse = SynapseServer(base_dir=base / "synapse")
    try:
        synapse.start()
        say(f"Synapse is up at {synapse.url}")
        return asyncio.run(scenario(synapse, base / "bot"))
    except Exception as err:  # a demo should end with a sentence, not a traceback
        print(f"demo failed: {err!r}", file=sys.stderr)
        return 1
    finally:
        synapse.stop()
        if keep:
            say(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
