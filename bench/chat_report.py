"""The figures of a `bench.chat` run, and how they are shown: rich tables on the terminal, its
section of docs/benchmarks.md."""

import collections
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import report
from bench.chat_clients import SLOW_KEPT, SLOW_S
from bench.report import MARK, markdown_table, ms, percentile, print_tables, ratio, rich_table

P99_GOAL_S = SLOW_S  # open loop: chat.send -> the other member's chat.message, p99 under this
THROUGHPUT_GOAL = 0.7  # closed loop: messages/s at least this fraction of the baseline chat server's; and
# open loop: the highest rate held (p99 under P99_GOAL_S) at least this fraction of the same
BASELINE = "bare"  # bench.chat_bare: the same work per message as the gateway's, written plainly
OLD_THROUGHPUT_GOAL = 0.5  # the goal against the per-row inserts (one commit per row), kept as a reference
NOISY = 0.15  # other processes using more than this much of a core disturbed the measurement


CPU_OF = ("server", "postgres", "redis", "clients", "other")  # the processes each window's CPU is measured for


def share(cpu: dict[str, float], name: str, seconds: float) -> str:
    return f"{cpu.get(name, 0.0) / seconds:.0%}"


@dataclass
class Step:
    """One open-loop window at one offered rate, on the gateway or on the baseline chat server."""

    rate: float  # offered, messages/s over all rooms
    seconds: float
    sent: int  # in the window
    done: int  # of those, delivered to the other member and answered
    late: int  # of those, still undelivered or unanswered when the drain ended
    errors: int
    latencies: list[float]  # chat.send leaving -> the other member's chat.message
    replies: list[float]  # chat.send leaving -> its reply (committed)
    lag: list[float]  # how much later than scheduled the clients sent
    cpu: dict[str, float]  # CPU seconds over the window: server, postgres, redis, clients, other
    slow: list[tuple[float, float]] = field(default_factory=list)  # (sent, latency) of messages over the goal
    side: str = "gateway"  # or "bare"

    def bursts(self, gap: float = 0.25) -> list[tuple[float, float, int]]:
        """The slow messages grouped by when they left (a new group after `gap` seconds without
        one): (first sent, last sent, how many). A few short groups mean pauses; long ones overload."""
        groups: list[tuple[float, float, int]] = []
        for sent, _ in sorted(self.slow):
            if groups and sent - groups[-1][1] <= gap:
                first, _, count = groups[-1]
                groups[-1] = (first, sent, count + 1)
            else:
                groups.append((sent, sent, 1))
        return groups

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 0.5)

    @property
    def p99(self) -> float:
        """Messages that never arrived count as slower than any that did."""
        if self.late:
            return math.inf
        return percentile(self.latencies, 0.99)

    @property
    def kept_up(self) -> bool:
        return self.errors == 0 and self.late == 0 and self.sent >= 0.97 * self.rate * self.seconds

    @property
    def held(self) -> bool:
        return self.kept_up and self.p99 < P99_GOAL_S

    def summary(self) -> str:
        state = "held" if self.held else "kept up, p99 over the goal" if self.kept_up else "did NOT keep up"
        return (f"{self.rate:,.0f} msg/s offered: {self.sent / self.seconds:,.0f} sent/s, p50 {ms(self.p50)}, p99 "
                f"{ms(self.p99)}, {self.late} late; server CPU {share(self.cpu, 'server', self.seconds)}, "
                f"PostgreSQL {share(self.cpu, 'postgres', self.seconds)}, clients lag p99 "
                f"{ms(percentile(self.lag, 0.99))}; {self.slow_text()}: {state}")

    def slow_text(self) -> str:
        bursts = self.bursts()
        if not bursts:
            return f"none over {ms(P99_GOAL_S)}"
        longest = max(last - first for first, last, _ in bursts)
        return (f"{len(self.slow):,} over {ms(P99_GOAL_S)} in {len(bursts)} burst{'s' * (len(bursts) > 1)}, the "
                f"longest {ms(longest)} of sending")


@dataclass
class Throughput:
    """One closed-loop window: the gateway's chat.send, the baseline server's, or bare inserts."""

    side: str  # "gateway", "bare" (the baseline), "asyncpg-batched" or "asyncpg" (inserts only: references)
    round: int
    in_flight: int
    done: int  # messages delivered to the other member (gateway, bare), rows inserted (asyncpg), in the window
    seconds: float
    latencies: list[float]
    cpu: dict[str, float]  # server (the gateway or a baseline's process), postgres, redis, clients, other
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.done / self.seconds

    def per_cpu(self, name: str) -> float:
        """CPU milliseconds of `name` per message."""
        return 1000 * self.cpu.get(name, 0.0) / self.done if self.done else float("nan")

    def summary(self) -> str:
        cpu = {name: share(self.cpu, name, self.seconds) for name in CPU_OF}
        return (f"{self.rate:,.0f}/s, p50 {ms(percentile(self.latencies, 0.5))}, p99 "
                f"{ms(percentile(self.latencies, 0.99))}; {self.side} CPU {cpu['server']}, PostgreSQL "
                f"{cpu['postgres']}, Redis {cpu['redis']}, clients {cpu['clients']}, others {cpu['other']}")


@dataclass(frozen=True)
class LogErrors:
    """What a stretch of the gateway's log says went wrong."""

    errors: int  # lines at level ERROR or CRITICAL
    first: str
    exceptions: collections.Counter[str]  # the exceptions named at the ends of its tracebacks

    @classmethod
    def of(cls, lines: Sequence[str]) -> "LogErrors":
        errors = [line for line in lines if " ERROR " in line or " CRITICAL " in line]
        names = collections.Counter(line.split(":", 1)[0] for line in lines
                                    if re.match(r"[\w.]+(Error|Exception)\b", line))
        return cls(len(errors), errors[0] if errors else "", names)


@dataclass
class Figures(report.Figures):
    steps: list[Step] = field(default_factory=list)
    throughput: list[Throughput] = field(default_factory=list)
    log_measuring: "LogErrors" = field(default_factory=lambda: LogErrors.of([]))  # the gateway's, until the end
    log_closing: "LogErrors" = field(default_factory=lambda: LogErrors.of([]))  # as the sessions closed

    def best(self, side: str = "gateway") -> Step | None:
        """The side's highest offered rate held with p99 under the goal (its ramp stops at its first miss)."""
        held = [s for s in self.steps if s.held and s.side == side]
        return max(held, key=lambda s: s.rate) if held else None

    def median(self, side: str, value: str) -> float:
        runs = [r for r in self.throughput if r.side == side]
        if not runs:
            return float("nan")
        if value in ("rate", "p50", "p99"):
            values = [r.rate if value == "rate" else percentile(r.latencies, 0.5 if value == "p50" else 0.99)
                      for r in runs]
        else:
            values = [r.per_cpu(value) for r in runs]
        return float(statistics.median(values))


SUMMARY_HEADER = ["Measure", "Baseline", "Gateway", "Gateway ÷ baseline", "Goal", "Result"]


def summary_rows(f: Figures) -> list[list[str]]:
    s = f.settings
    rows = []
    if f.steps:
        best, base_best = f.best(), f.best(BASELINE)
        enough = best is not None and base_best is not None and best.rate >= THROUGHPUT_GOAL * base_best.rate
        rows.append([f"Open loop: highest rate held, p99 chat.send -> the other member's chat.message < "
                     f"{ms(P99_GOAL_S)} ({s['rooms']:,} rooms; baseline: the baseline chat server's, same ramp)",
                     f"{base_best.rate:,.0f} msg/s" if base_best else "none",
                     f"{best.rate:,.0f} msg/s" if best else "none",
                     f"{ratio(best.rate, base_best.rate):.3f}x" if best and base_best else "",
                     f">= {THROUGHPUT_GOAL}x, p99 < {ms(P99_GOAL_S)}", MARK[enough]])
        for side_best, side in ((best, "gateway"), (base_best, BASELINE)):
            if side_best is not None:
                rows.append([f"Open loop at {side_best.rate:,.0f} msg/s (the highest held): p50 / p99",
                             "" if side == "gateway" else f"{ms(side_best.p50)} / {ms(side_best.p99)}",
                             f"{ms(side_best.p50)} / {ms(side_best.p99)}" if side == "gateway" else "", "", "", ""])
        for side in ("gateway", BASELINE):
            ramp = [st for st in f.steps if st.side == side]
            top = max(ramp, key=lambda st: st.rate) if ramp else None
            if top is not None and not top.held:
                shown = f"{ms(top.p50)} / {ms(top.p99)}"
                rows.append([f"Open loop at {top.rate:,.0f} msg/s (the first missed): p50 / p99",
                             "" if side == "gateway" else shown, shown if side == "gateway" else "", "", "", ""])
    if f.throughput:
        n = f.throughput[0].in_flight
        base, mine = f.median(BASELINE, "rate"), f.median("gateway", "rate")
        rows.append([f"Closed loop: messages stored and delivered/s, {n} in flight (baseline: a bare chat server "
                     f"doing the same work per message, up to 500 per transaction, pool of {s['pool_size']})",
                     f"{base:,.0f}", f"{mine:,.0f}", f"{ratio(mine, base):.3f}x", f">= {THROUGHPUT_GOAL}x",
                     MARK[ratio(mine, base) >= THROUGHPUT_GOAL]])
        batched = f.median("asyncpg-batched", "rate")
        if not math.isnan(batched):
            rows.append(["… against bare asyncpg inserts only, batched as the gateway's writer (no websockets, no "
                         "membership check, no room counter, no delivery; the earlier baseline)",
                         f"{batched:,.0f}", f"{mine:,.0f}", f"{ratio(mine, batched):.3f}x", "(reference)", ""])
        per_row = f.median("asyncpg", "rate")
        if not math.isnan(per_row):
            rows.append(["… against bare asyncpg inserts only, one row per statement (a commit per row)",
                         f"{per_row:,.0f}", f"{mine:,.0f}", f"{ratio(mine, per_row):.3f}x",
                         f">= {OLD_THROUGHPUT_GOAL}x (old goal)", MARK[ratio(mine, per_row) >= OLD_THROUGHPUT_GOAL]])
        for name, label in (("server", "CPU per message: the gateway process (baseline: the baseline server's)"),
                            ("postgres", "CPU per message: PostgreSQL, all its processes"),
                            ("redis", "CPU per message: Redis (the baseline uses none)")):
            base, mine = f.median(BASELINE, name), f.median("gateway", name)
            times = f"{ratio(mine, base):.1f}x" if base >= 0.001 else ""
            rows.append([label, f"{base:.3f} ms", f"{mine:.3f} ms", times, "", ""])
        base, mine = f.median(BASELINE, "p50"), f.median("gateway", "p50")
        rows.append(["Closed loop p50: send -> the other member's chat.message", ms(base), ms(mine),
                     f"{ratio(mine, base):.1f}x", "", ""])
    return rows


STEP_HEADER = ["Server", "Offered msg/s", "Sent/s", "p50", "p90", "p99", "max", "Reply p99", "Client lag p99", "Late",
               f"Over {ms(P99_GOAL_S)}",
               "Server CPU", "PostgreSQL CPU", "Redis CPU", "Client CPU", "Other CPU", f"p99 < {ms(P99_GOAL_S)}"]


def step_rows(f: Figures) -> list[list[str]]:
    rows = []
    for st in f.steps:
        result = MARK[st.held] if st.kept_up else "FAIL (fell behind)"
        rows.append(["gateway" if st.side == "gateway" else "baseline", f"{st.rate:,.0f}",
                     f"{st.sent / st.seconds:,.0f}", ms(st.p50),
                     ms(percentile(st.latencies, 0.9)), ms(st.p99), ms(percentile(st.latencies, 1.0)),
                     ms(percentile(st.replies, 0.99)), ms(percentile(st.lag, 0.99)), f"{st.late:,}",
                     _over(st),
                     *(share(st.cpu, name, st.seconds) for name in CPU_OF),
                     result])
    return rows


def _over(st: Step) -> str:
    """How many messages took longer than the goal, and in how many bursts of sending."""
    if not st.slow:
        return "0"
    bursts = st.bursts()
    more = "+" if len(st.slow) >= SLOW_KEPT else ""
    return f"{len(st.slow):,}{more} in {len(bursts)} burst{'s' * (len(bursts) > 1)}"


THROUGHPUT_HEADER = ["Round", "Side", "Messages/s", "p50", "p99", "Server CPU", "PostgreSQL CPU", "Redis CPU",
                     "Client CPU", "Other CPU", "Server CPU ms/msg", "PostgreSQL CPU ms/msg"]


SIDE_NAMES = {"gateway": "gateway chat.send", "bare": "baseline chat server chat.send",
              "asyncpg": "bare asyncpg INSERT, a row per commit",
              "asyncpg-batched": "bare asyncpg INSERT, batched"}


def throughput_rows(f: Figures) -> list[list[str]]:
    return [[str(r.round), SIDE_NAMES[r.side], f"{r.rate:,.0f}",
             ms(percentile(r.latencies, 0.5)), ms(percentile(r.latencies, 0.99)),
             *(share(r.cpu, name, r.seconds) for name in CPU_OF),
             f"{r.per_cpu('server'):.3f}", f"{r.per_cpu('postgres'):.3f}"] for r in f.throughput]


def notes(f: Figures) -> list[str]:
    out = []
    windows = [(st.cpu, st.seconds) for st in f.steps] + [(r.cpu, r.seconds) for r in f.throughput]
    noisy = sum(1 for cpu, seconds in windows if cpu.get("other", 0.0) / seconds > NOISY)
    if noisy:
        out.append(f"Other processes used more than {NOISY:.0%} of a core during {noisy} of {len(windows)} measured "
                   "windows (Other CPU): this machine is shared, and those figures are worse than on a quiet one.")
    lagging = [st for st in f.steps if percentile(st.lag, 0.99) > P99_GOAL_S / 10]
    if lagging:
        out.append(f"The clients sent later than scheduled by more than {ms(P99_GOAL_S / 10)} (p99) at "
                   f"{', '.join(f'{st.rate:,.0f} ({st.side})' for st in lagging)} msg/s: they share their core "
                   "with PostgreSQL and Redis; latencies count from when a frame actually left.")
    if f.throughput and ratio(f.median("gateway", "rate"), f.median(BASELINE, "rate")) < THROUGHPUT_GOAL:
        out.append("Throughput misses its goal: `--profile DIR` runs the closed loop of the gateway and of the "
                   "baseline under cProfile and prints where each spends its time.")
    for when, log in (("while measuring", f.log_measuring), (f"as its {2 * f.settings['rooms']:,} sessions closed",
                                                               f.log_closing)):
        if log.errors:
            kinds = ", ".join(f"`{name}` x{count:,}" for name, count in log.exceptions.most_common(3))
            out.append(f"The gateway logged {log.errors:,} errors {when}{' (' + kinds + ')' if kinds else ''}; the "
                       f"first: `{log.first[:160]}`")
    if not f.settings["pinned"]:
        out.append("Servers and clients were not pinned to separate cores (--no-pin).")
    return out


def print_report(f: Figures) -> None:
    tables = []
    if f.steps:
        tables.append(rich_table("Open loop: chat.send -> the other member's chat.message", STEP_HEADER, step_rows(f)))
    if f.throughput:
        tables.append(rich_table("Closed loop, every run", THROUGHPUT_HEADER, throughput_rows(f)))
    tables.append(rich_table("Chat: the gateway against same-run baselines", SUMMARY_HEADER, summary_rows(f)))
    print_tables(f, tables, notes(f))


def write_markdown(f: Figures, path: Path) -> None:
    s = f.settings
    rounds = f.rounds
    pinning = ("the gateway and the baselines' processes are pinned to one core, the clients to the other(s)"
               if s["pinned"] else "nothing is pinned to a core")
    report.write_markdown(path, "chat", f, profile="""`--profile DIR` runs the closed loop
of the gateway and of the baseline chat server once each under cProfile and prints where each spends
its time.""", about=f"""\
The gateway is `run.py serve` with one worker, embedded PostgreSQL and Redis, the per-session rate
limit out of the way and otherwise its defaults (a pool of {s['pool_size']} PostgreSQL connections); {pinning};
PostgreSQL (`fsync` on, as shipped) and Redis float. {2 * s['rooms']:,} orders are put straight into
PostgreSQL as accepted, each with its own consumer and technician: {s['rooms']:,} rooms for the gateway,
{s['rooms']:,} for the baseline chat server; both members of every room are connected to their server
({2 * s['rooms']:,} sessions each, tokens minted with the gateway's secret), both in the same one of
{s['clients']} client processes per server (websockets' Sans-I/O protocol on uvloop). Each `chat.send`
carries a {s['text_bytes']}-byte text and a fresh `client_id`; the members of a room take turns sending.
Both servers answer a `chat.send` once the message is stored (committed, with the room's next
sequence number) and send the room's members (the sender too) their `chat.message` before that
commit, so they receive a room's messages in sequence order. A message counts once the other
member has its `chat.message` and the sender its reply.

**The baseline** is `bench/chat_bare.py`, a bare chat server doing the same work per message,
written plainly in one file: websockets on uvloop with the gateway's transport settings and its
write path, the sign-in token verified as the gateway verifies it, each `chat.send` decoded into
the protocol's Struct (its bounds checked), queued, and one writer task storing all that are queued,
up to 500, in one transaction as the gateway's chat writer does: the rooms' members read from
`orders` (a sender who is not one is refused), the messages stored with the gateway's own
statements (`storage.chat.send_many`: idempotent by client id, the room's next gap-free sequence
numbers, the text sealed with the gateway's field cipher and key, AES-256-GCM bound to room and
sequence number), each delivered to both members' sessions before the commit, the senders answered
with the stored message after it; the same pool and the same garbage-collector settling. What it
does not do that the gateway does: Redis (per batch, the presence directory's lookup of which other
processes hold the members, for delivery to them; the gateway skips its lookup for pushes to offline
members when they have a session on it, as here), attachments, per-session state (rate limit,
roles), metrics and per-operation latency histograms, every other operation.

- **Latency, open loop**: messages leave at a steady aggregate rate (message k at k ÷ rate, rooms
  in turn), whether or not earlier ones were answered; from the `chat.send` frame leaving the
  sender to the other member receiving its `chat.message`, for the messages sent in {s['step_seconds']:g} s after
  {s['warmup']:g} s at that rate. Each rate runs on the gateway, then on the baseline; each side's rate rises
  step by step until its p99 reaches {ms(P99_GOAL_S)} or it falls behind (messages of the window still
  undelivered {s['drain_s']:g} s after it, or the clients unable to send at the rate). Reported: each side's
  highest rate held with p99 under {ms(P99_GOAL_S)}. Messages over {ms(P99_GOAL_S)} are grouped by when they left: a
  few short bursts are pauses (of the server's event loop, or of its core, which the other agents
  on this machine share), one that lasts is overload. Goal: the gateway's highest rate held is at
  least {THROUGHPUT_GOAL}x the baseline's (the rates are steps: a ratio says which steps held). Before, it was
  checked against the insert-only baseline's closed-loop rate (no websockets, and a rate at any
  latency), and before that any rate held passed. Measuring starts {s['settle_s']:g} s after the last
  sessions opened, once the servers have moved them out of the garbage collector's way (before
  that, full collections of about 60 ms land on whatever is measured).
- **Throughput, closed loop**: {s['in_flight']} rooms keep one message each in flight, the next leaving
  once the previous one is delivered and answered; messages delivered in {s['seconds']:g} s after {s['warmup']:g} s
  of warm-up; the gateway, the baseline chat server (on the gateway's core), and two references
  that do far less: `bench/chat_inserts.py`, one process on uvloop (on the gateway's core) with the
  same pool and {s['in_flight']} coroutines inserting rows like the gateway's (the same body sealed the same
  way) into `chat_messages`, each in a room of its own, the next as soon as the previous one is
  committed: **batched** (the baseline before this one: up to 500 rows in one transaction with one
  multi-row INSERT) and **per row** (the one before that: one INSERT per statement in autocommit).
  They look up no order, take no room counter and dedup nothing (they number their rows
  themselves), and have no websockets and no delivery. Goal: at least {THROUGHPUT_GOAL}x the baseline chat
  server's rate (it was {THROUGHPUT_GOAL}x of the batched inserts, {OLD_THROUGHPUT_GOAL}x of the per-row ones).
  Median of {rounds}, the order of the sides alternating.
- **CPU** over each window from `/proc`: the server (the gateway, or a baseline's process), PostgreSQL (the
  postmaster and all its backends), Redis, the clients, and *other* (the rest of the machine).""", tables=f"""\
### Summary

{markdown_table(SUMMARY_HEADER, summary_rows(f))}

### Open loop, every rate

{markdown_table(STEP_HEADER, step_rows(f))}

### Closed loop, every run

{markdown_table(THROUGHPUT_HEADER, throughput_rows(f))}""",
                          notes=notes(f) + [str(n) for n in s.get("findings", [])])
