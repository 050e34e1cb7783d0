"""Policy matching benchmark: 100,000 rules, one user checked against all of them.

Run by hand (not a test)::

    cd /work/main && /work/venv/bin/python -m benchmarks.bench_policy_match [--rules 100000] [--probes 20000]

Every figure is printed next to a baseline measured in the same run:

(a) Build: ``--rules`` policy events (90 % literal user ids, 10 % globs: mostly ``@*:server``, and
    ``@spam…*:*``, ``*bad…*``, ``@?????:x….org``), then ``parse_rule``, the safety filter
    (``PolicySafety``) and ``RuleIndex.add_all``. Each step's time is shown, with RSS (VmRSS) before
    and after.
(b) Lookup: ``RuleIndex.ban_rules_for("user", uid, allow_lists)`` for ``--probes`` random ids.
    About 90 % of them match nothing; the rest hit a literal, a server-wide glob or another glob.
    One allow-list room holds 100 exceptions. Each call is timed on its own with
    ``perf_counter_ns``; the output shows median, p90 and p99. The baseline is a plain ``dict.get``
    of the same ids in a dict of the literal entities, timed the same way. The ratio of the medians
    is printed, along with the timer's own cost and a tight-loop mean without per-call timers.
(c) Applying a new list: a 10,000-rule list (same mix) against 5,000 members. The output shows the
    CPU seconds of the matching loop alone, and of the whole apply (parse + safety + build + loop).
(d) Hostile lists and ReDoS:
    * a 255-character id against 10,000 distinct ReDoS-shaped globs, where the literal index
      prunes most of them;
    * the same id against 10,000 globs that all share a literal with it, so every one must really
      be checked (the worst a list author can do);
    * one ``*a*a*a*b`` check compared with the naive ``.*`` translation in Python's ``re``.
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import statistics
import string
import sys
import time
from collections.abc import Callable, Sequence

from policies.glob import clear_caches, compile_glob
from policies.matcher import RuleIndex
from policies.rules import Rule, parse_rule
from policies.safety import PolicySafety

try:
    from benchmarks._stats import percentile
except ImportError:  # run as a script: python benchmarks/<name>.py
    from _stats import percentile  # type: ignore[no-redef]

LIST = "!banlist:lists.example"
ALLOW = "!allowlist:our.example"
BOT = "@abusebot:our.example"


def rss_mb() -> float:
    """Resident set size of this process in MB (VmRSS), after a full collection."""
    gc.collect()
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def localpart(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(5, 12)))


def make_events(count: int, rng: random.Random) -> tuple[list[dict[str, object]], list[str], list[str]]:
    """``count`` raw policy events (90 % literal, 10 % glob); also the literal ids and the glob-matching ids."""
    events: list[dict[str, object]] = []
    literals: list[str] = []
    glob_hits: list[str] = []
    globs = count // 10
    for number in range(count - globs):
        uid = f"@{localpart(rng)}{number}:{rng.choice(('', 'matrix.'))}hs{rng.randrange(5000)}.example"
        literals.append(uid)
        events.append(policy_event(uid, number))
    for number in range(globs):
        shape = number % 10
        if shape < 7:  # the common case: a whole spam server
            entity, hit = f"@*:spamhost{number}.example", f"@{localpart(rng)}:spamhost{number}.example"
        elif shape == 7:
            entity, hit = f"@spam{number}*:*", f"@spam{number}{localpart(rng)}:any.example"
        elif shape == 8:
            entity, hit = f"*bad{number}x*", f"@very_bad{number}xguy:any.example"
        else:
            entity, hit = f"@?????:x{number}.org", f"@{localpart(rng)[:5].ljust(5, 'q')}:x{number}.org"
        glob_hits.append(hit)
        events.append(policy_event(entity, count + number))
    rng.shuffle(events)
    return events, literals, glob_hits


def policy_event(entity: str, number: int) -> dict[str, object]:
    return {
        "type": "m.policy.rule.user",
        "state_key": f"rule:{entity}",
        "event_id": f"$policy{number}",
        "sender": "@curator:lists.example",
        "content": {"entity": entity, "recommendation": "m.ban", "reason": "spam"},
    }


def parse_all(events: Sequence[dict[str, object]], room: str) -> list[Rule]:
    rules = []
    for event in events:
        parsed = parse_rule(event, room)
        if isinstance(parsed, Rule):
            rules.append(parsed)
    return rules


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def per_call_ns(call: Callable[[str], object], probes: Sequence[str]) -> list[int]:
    clock = time.perf_counter_ns
    out = []
    for probe in probes:
        start = clock()
        call(probe)
        out.append(clock() - start)
    return out


def loop_ns(call: Callable[[str], object], probes: Sequence[str]) -> float:
    """Mean ns per call over a tight loop, with no per-call timer."""
    start = time.perf_counter_ns()
    for probe in probes:
        call(probe)
    return (time.perf_counter_ns() - start) / len(probes)


def step(name: str, wall: float, cpu: float, count: int, unit: str) -> None:
    print(f"  {name:<35}{wall:6.3f} s wall  {cpu:6.3f} s CPU  ({wall / count * 1e6:.2f} µs/{unit})")


def show(name: str, samples: Sequence[float], unit: str = "µs", scale: float = 1e-3) -> None:
    print(
        f"  {name:<34} median {statistics.median(samples) * scale:8.3f} {unit}"
        f"   p90 {percentile(samples, 90) * scale:8.3f}   p99 {percentile(samples, 99) * scale:8.3f}"
    )


def bench_build_and_lookup(args: argparse.Namespace, rng: random.Random) -> None:
    print(f"(a) build: {args.rules:,} rules (90 % literal user ids, 10 % globs)")
    events, literals, glob_hits = make_events(args.rules, rng)
    allow_events = [policy_event(uid.upper(), 10**9 + n) for n, uid in enumerate(rng.sample(literals, 100))]
    clear_caches()
    rss_before = rss_mb()
    holder: dict[str, list[Rule]] = {}
    wall, cpu = timed(lambda: holder.setdefault("rules", parse_all(events, LIST)))
    rules = holder["rules"] + parse_all(allow_events, ALLOW)
    step("parse_rule", wall, cpu, len(events), "event")
    rss_parsed = rss_mb()
    safety = PolicySafety(
        bot_user_id=BOT, protected_users=[f"@mod{n}:our.example" for n in range(20)], own_server="our.example"
    )
    wall, cpu = timed(lambda: [rule for rule in rules if safety.unsafe_reason(rule) is None])
    step("safety filter (20 protected users)", wall, cpu, len(rules), "rule")
    index = RuleIndex()
    wall, cpu = timed(lambda: index.add_all(rules))
    step("RuleIndex.add_all", wall, cpu, len(rules), "rule")
    rss_after = rss_mb()
    print(
        f"  RSS: {rss_before:.0f} MB before, {rss_parsed:.0f} MB with parsed rules (+{rss_parsed - rss_before:.0f}),"
        f" {rss_after:.0f} MB with the index (+{rss_after - rss_parsed:.0f});"
        f" {(rss_after - rss_before) * 1e6 / len(rules):.0f} B per rule in all"
    )

    print(f"\n(b) lookup: ban_rules_for('user', uid) for {args.probes:,} probe ids")
    probes: list[str] = []
    for _ in range(args.probes):
        roll = rng.random()
        if roll < 0.05:
            probes.append(rng.choice(literals).upper() if rng.random() < 0.2 else rng.choice(literals))
        elif roll < 0.10:
            probes.append(rng.choice(glob_hits))
        else:
            probes.append(f"@{localpart(rng)}:{rng.choice(('', 'matrix.'))}home{rng.randrange(3000)}.example")
    allow = {ALLOW}
    baseline = {uid.lower(): uid for uid in literals}
    index.ban_rules_for("user", probes[0], allow)  # builds the automaton once (lazy)
    hits = sum(1 for probe in probes if index.ban_rules_for("user", probe, allow))
    print(f"  {hits:,} of {len(probes):,} probes are banned (the rest match nothing or an exception)")
    empty = per_call_ns(lambda probe: None, probes)
    base = per_call_ns(baseline.get, probes)
    ours = per_call_ns(lambda probe: index.ban_rules_for("user", probe, allow), probes)
    show("timer alone (lambda: None)", empty)
    show("baseline: dict.get", base)
    show("RuleIndex.ban_rules_for", ours)
    print(
        f"  ratio of medians ours/dict.get: {statistics.median(ours) / statistics.median(base):.1f}x"
        f"   (minus timer cost: {(statistics.median(ours) - statistics.median(empty)) / 1e3:.3f} µs"
        f" vs {(statistics.median(base) - statistics.median(empty)) / 1e3:.3f} µs)"
    )
    tight_ours = loop_ns(lambda probe: index.ban_rules_for("user", probe, allow), probes)
    tight_base = loop_ns(baseline.get, probes)
    print(
        f"  tight loop mean: ours {tight_ours / 1e3:.3f} µs, dict.get {tight_base / 1e3:.3f} µs"
        f" ({tight_ours / tight_base:.0f}x); target median ≤ 5 µs:"
        f" {'met' if statistics.median(ours) <= 5000 else 'NOT met'}"
    )


def bench_apply(rng: random.Random) -> None:
    print("\n(c) applying a new 10,000-rule list to 5,000 members")
    events, literals, glob_hits = make_events(10_000, rng)
    members = [rng.choice(literals) for _ in range(50)] + [rng.choice(glob_hits) for _ in range(50)]
    members += [f"@{localpart(rng)}:home{rng.randrange(300)}.example" for _ in range(5_000 - len(members))]
    clear_caches()
    safety = PolicySafety(
        bot_user_id=BOT, protected_users=[f"@mod{n}:our.example" for n in range(20)], own_server="our.example"
    )
    index = RuleIndex()
    banned: list[str] = []

    def apply() -> None:
        rules = parse_all(events, LIST)
        index.add_all(rule for rule in rules if safety.unsafe_reason(rule) is None)
        loop()

    def loop() -> None:
        banned.clear()
        for member in members:
            if index.ban_rules_for("user", member):
                banned.append(member)

    _, apply_cpu = timed(apply)
    _, loop_cpu = timed(loop)
    baseline = {uid.lower() for uid in literals}
    _, base_cpu = timed(lambda: [member for member in members if member.lower() in baseline])
    print(f"  {len(banned)} of {len(members):,} members banned")
    print(f"  matching loop (5,000 × ban_rules_for): {loop_cpu:.4f} s CPU   baseline set lookup {base_cpu:.4f} s CPU")
    print(f"  whole apply (parse + safety + build + loop): {apply_cpu:.3f} s CPU; target ≤ 2 s")


def hostile_pruned(number: int) -> str:
    reps = 3 + number % 8
    if number % 10 == 0:
        return "*" + "a" * (1 + (number // 10) % 100) + "*a?" * reps + "*:b*a" + "?" * (number // 1000)
    return "*a" * reps + f"*b{number}" if number % 2 else "*a?a" * reps + f"*{number}b"


def hostile_all(number: int) -> str:
    forms = ("a", "a?", "?a", "a?a", "aa", "a??", "?a?", "aa?", "a?aa", "?")
    return "*" + "a" * (1 + number % 100) + ("*" + forms[number // 1000]) * (2 + (number // 100) % 10) + "*:b*a"


def bench_hostile() -> None:
    print("\n(d) hostile lists: a 255-character id against 10,000 ReDoS-shaped globs")
    uid = "@" + "a" * 250 + ":a.a"
    for name, make in (("10 % share a literal with the id", hostile_pruned), ("all share a literal", hostile_all)):
        rules = [
            Rule(kind="user", entity=make(n), recommendation="ban", list_room=LIST, state_key=str(n))
            for n in range(10_000)
        ]
        clear_caches()
        index = RuleIndex()
        _, build = timed(lambda: index.add_all(rules))  # noqa: B023 (called at once)
        _, first = timed(lambda: index.match("user", uid))  # noqa: B023
        warm = min(timed(lambda: index.match("user", uid))[1] for _ in range(3))  # noqa: B023
        print(f"  {name:<34} build {build * 1e3:6.1f} ms CPU; lookup {first * 1e3:6.1f} ms, warm {warm * 1e3:6.1f} ms")

    text = "a" * 255
    glob = compile_glob("*a*a*a*b")
    ours = min(timed(lambda: glob.matches(text))[1] for _ in range(5))
    naive = re.compile("(?s:.*a.*a.*a.*b)\\Z")
    _, theirs = timed(lambda: naive.match(text))
    print(
        f"  '*a*a*a*b' vs 'a'*255: ours {ours * 1e6:.1f} µs, naive re '.*a.*a.*a.*b' {theirs * 1e3:.1f} ms"
        f" ({theirs / max(ours, 1e-9):,.0f}x)"
    )


def main(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    print(f"Python {sys.version.split()[0]}, seed {args.seed}\n")
    bench_build_and_lookup(args, rng)
    bench_apply(rng)
    bench_hostile()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=100_000, help="rules in the big index (default 100,000)")
    parser.add_argument("--probes", type=int, default=20_000, help="probe ids to look up (default 20,000)")
    parser.add_argument("--seed", type=int, default=4205)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
