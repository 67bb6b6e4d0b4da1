"""bench.soak's figures: per minute and per operation, per node; the goals, the tables, the plot."""

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from hdrh.histogram import HdrHistogram

from bench import report
from bench.report import MARK, markdown_table, print_tables, rich_table
from bench.soak_clients import LAG_TICK_S, OPS, histogram

RSS_GROWTH_GOAL = 0.10  # from the end of minute 5 to the end
STEADY_GOAL = 2.0  # no minute's p99 over this many times the median minute's
MIN_SAMPLES = 100  # an operation's p99 in a minute means something with at least this many samples
PLOT = Path("docs/img/soak.png")  # beside the Markdown: img/soak.png from docs/benchmarks.md
NODES = ("a", "b")
TIMETABLED = {"location.update", "order.nearby", "order.create", "dispatch"}


@dataclass
class NodeMinute:
    rss: int  # at the minute's end
    peak: int  # the largest sampled within it
    cpu_s: float
    gc: dict[str, float]  # gateway_gc_pause_seconds' series over the minute: '_sum{generation="0"}' -> seconds...
    wait_s: float  # runnable but waiting for a CPU (/proc/PID/schedstat)
    machine_s: float  # CPU seconds the whole machine was busy in the minute (all cores, everyone)


@dataclass
class Minute:
    number: int  # -1: the ramp
    ops: dict[str, HdrHistogram]
    errors: dict[str, int]
    sessions: int  # signed in at the minute's end
    client_cpu_s: float  # the busiest client process's CPU seconds in the minute
    client_wait_s: float  # the longest a client process waited for a CPU in the minute


@dataclass
class Figures(report.Figures):
    nodes: list[list[NodeMinute]] = field(default_factory=list)
    minutes: list[Minute] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    @property
    def measured(self) -> list[Minute]:
        return [m for m in self.minutes if m.number >= 0]

    @property
    def cores(self) -> int:
        return int(self.settings.get("cores", 1))

    @property
    def base_minute(self) -> int:
        """The minute whose end is the memory baseline: the 5th, or the 1st of a short run."""
        return 5 if len(self.nodes[0]) > 5 else 1


def ms(us: float) -> str:
    return report.ms(us / 1e6)


def p99s(f: Figures, op: str) -> list[float]:
    """The op's p99 per measured minute, microseconds (nan where it had no sample)."""
    return [m.ops[op].get_value_at_percentile(99.0) if op in m.ops else float("nan") for m in f.measured]


def counts(f: Figures, op: str) -> list[int]:
    return [m.ops[op].get_total_count() if op in m.ops else 0 for m in f.measured]


def whole(f: Figures, op: str) -> HdrHistogram:
    h = histogram()
    for m in f.measured:
        if op in m.ops:
            h.add(m.ops[op])
    return h


def steady(f: Figures, op: str) -> bool | None:
    """No minute's p99 over STEADY_GOAL x the median minute's; None when some minute had too few samples."""
    if min(counts(f, op), default=0) < MIN_SAMPLES:
        return None
    values = p99s(f, op)
    return max(values) <= STEADY_GOAL * statistics.median(values)


def growth(minutes: list[NodeMinute], base: int) -> float:
    return minutes[-1].rss / minutes[base - 1].rss - 1


def gc_totals(minutes: list[NodeMinute]) -> tuple[int, float, float, int]:
    """(collections, seconds paused, the longest pause's bucket bound, full collections) over the run."""
    total: dict[str, float] = {}
    for m in minutes:
        for key, value in m.gc.items():
            total[key] = total.get(key, 0.0) + value
    count = sum(v for k, v in total.items() if k.startswith("_count"))
    seconds = sum(v for k, v in total.items() if k.startswith("_sum"))
    full = sum(v for k, v in total.items() if k.startswith("_count") and 'generation="2"' in k)
    # The longest pause is within the smallest bound whose cumulative bucket holds every pause of its generation.
    longest = 0.0
    for generation in "012":
        every = total.get(f'_count{{generation="{generation}"}}', 0.0)
        bounds = [float(k.split('le="')[1].split('"')[0]) for k, v in total.items()
                  if k.startswith(f'_bucket{{generation="{generation}"') and every and v >= every]
        longest = max(longest, min(bounds, default=0.0))
    return int(count), seconds, longest, int(full)


def gc_seconds(m: NodeMinute) -> float:
    return sum(v for k, v in m.gc.items() if k.startswith("_sum"))


OP_HEADER = ["Operation", "Samples", "Per minute", "p99, median minute", "p99, worst minute", "p99.9 (all)",
             "max", f"Steady (<= {STEADY_GOAL:g}x)"]


def op_rows(f: Figures) -> list[list[str]]:
    rows = []
    for op in OPS:
        n = counts(f, op)
        if not sum(n):
            continue
        h, values, ok = whole(f, op), p99s(f, op), steady(f, op)
        rows.append([op + (" (due)" if op in TIMETABLED else ""), f"{sum(n):,}", f"{min(n):,}-{max(n):,}",
                     ms(statistics.median(values)), ms(max(values)), ms(h.get_value_at_percentile(99.9)),
                     ms(h.get_max_value()), "n/a (few)" if ok is None else MARK[ok]])
    return rows


NODE_HEADER = ["Node", "RSS, end of minute {base}", "RSS, end", "Growth", "Peak RSS", "CPU (mean)", "GC collections",
               "GC paused", "Longest GC pause", "Full collections", f"Growth < {RSS_GROWTH_GOAL:.0%}"]


def node_rows(f: Figures) -> list[list[str]]:
    rows = []
    base = f.base_minute
    for name, minutes in zip(NODES, f.nodes, strict=True):
        g = growth(minutes, base)
        count, seconds, longest, full = gc_totals(minutes)
        cpu = sum(m.cpu_s for m in minutes) / (60 * len(minutes))
        rows.append([name, f"{minutes[base - 1].rss / 2**20:.0f} MiB", f"{minutes[-1].rss / 2**20:.0f} MiB",
                     f"{g:+.1%}", f"{max(m.peak for m in minutes) / 2**20:.0f} MiB", f"{cpu:.0%}", f"{count:,}",
                     f"{seconds * 1000:,.0f} ms ({seconds / (60 * len(minutes)):.2%})",
                     f"<= {longest * 1000:g} ms", f"{full:,}", MARK[g < RSS_GROWTH_GOAL]])
    return rows


MINUTE_OPS = ("location.update", "order.nearby", "order.create", "dispatch", "order.accept", "chat.send",
              "chat.delivery")
MINUTE_HEADER = ["Minute", "Signed in", "RSS a, MiB", "RSS b, MiB", "GC a, ms", "GC b, ms",
                 *(f"p99 {op}" for op in MINUTE_OPS), "Errors", "Client CPU", "Client lag p99", "Machine busy",
                 "Waiting for a CPU: a / b / client"]


def minute_rows(f: Figures) -> list[list[str]]:
    rows = []
    for i, m in enumerate(f.measured):
        a, b = f.nodes[0][i], f.nodes[1][i]
        cells = [ms(m.ops[op].get_value_at_percentile(99.0)) if op in m.ops else "-" for op in MINUTE_OPS]
        lag = m.ops.get("client.lag")
        rows.append([str(m.number + 1), f"{m.sessions:,}", f"{a.rss / 2**20:.0f}", f"{b.rss / 2**20:.0f}",
                     f"{gc_seconds(a) * 1000:.0f}", f"{gc_seconds(b) * 1000:.0f}", *cells,
                     f"{sum(m.errors.values()):,}", f"{m.client_cpu_s / 60:.0%}",
                     ms(lag.get_value_at_percentile(99.0)) if lag else "-", f"{a.machine_s / 60 / f.cores:.0%}",
                     f"{a.wait_s / 60:.0%} / {b.wait_s / 60:.0%} / {m.client_wait_s / 60:.0%}"])
    return rows


def detail_rows(f: Figures) -> tuple[list[str], list[list[str]]]:
    """Every operation's p99 / p99.9 in every minute."""
    ops = [op for op in OPS if sum(counts(f, op))]
    rows = []
    for m in f.measured:
        rows.append([str(m.number + 1), *(f"{m.ops[op].get_value_at_percentile(99.0) / 1000:.1f} / "
                                          f"{m.ops[op].get_value_at_percentile(99.9) / 1000:.1f}" if op in m.ops
                                          else "-" for op in ops)])
    return ["Minute", *ops], rows


def passed(f: Figures) -> bool:
    base = f.base_minute
    return (all(growth(n, base) < RSS_GROWTH_GOAL for n in f.nodes)
            and all(steady(f, op) is not False for op in OPS))


def errors(f: Figures) -> dict[str, int]:
    total: dict[str, int] = {}
    for m in f.minutes:
        for key, n in m.errors.items():
            total[key] = total.get(key, 0) + n
    return total


def conditions(f: Figures) -> str:
    s = f.settings
    techs, consumers = s["technicians"], s["consumers"]
    return (f"{techs:,} technicians and {consumers:,} consumers over 2 gateway nodes for {s['minutes']} minutes "
            f"(after a {s['ramp_s']:g} s ramp): a position every {s['update_s']:g} s ({techs / s['update_s']:,.0f}/s),"
            f" a feed query every {s['feed_s']:g} s ({techs / s['feed_s']:,.0f}/s), an order every "
            f"{s['order_s']:g} s per consumer ({consumers / s['order_s']:,.1f}/s, each accepted, chatted about, "
            f"departed, started and completed), {s['churn']:.0%} of the sessions reconnecting each minute")


def notes(f: Figures) -> list[str]:
    out = [f"Latencies of timetabled operations (marked due) count from when they were due, not sent; the others "
           f"(accept and the job's steps, chat, sign-in) from when they were sent, in reaction to an event. "
           f"dispatch: order.create due to the named technician's order.available; chat.delivery: chat.send "
           f"leaving to the other member's chat.message. An operation with fewer than {MIN_SAMPLES} samples in "
           f"some minute is not held to the steadiness goal (its p99 would be its maximum).",
           "Client CPU is the busiest client process's share of a core; client lag, how late its event loop fired "
           f"a {LAG_TICK_S:g} s timer (p99): latencies include that delay, so where it is large the clients, not the "
           "gateway, set them.",
           "Machine busy: the share of all cores busy with anything (this bench, PostgreSQL, Redis and whatever "
           "else ran); waiting for a CPU: the share of the minute a node (or the most delayed client process) was "
           "runnable but not running (/proc/PID/schedstat). The kernel schedules by autogroup (one per session): "
           "other sessions' work takes its share whatever its nice value, so where these are high the machine, "
           "not the gateway, set the latencies.",
           "Client processes, both nodes, PostgreSQL and Redis share the machine's cores (nothing pinned); "
           "RSS is VmRSS from /proc, sampled every 5 s; GC pauses are the gateway's own gc.callbacks timings "
           "(gateway_gc_pause_seconds), the longest one known to its histogram bucket."]
    if found := errors(f):
        out.append("Errors (operation:code): " + ", ".join(f"{k} {n:,}" for k, n in sorted(found.items())) + ".")
    else:
        out.append("No error reply, timeout or lost session.")
    return out


def print_report(f: Figures) -> None:
    base = f.base_minute
    header = [h.format(base=base) for h in NODE_HEADER]
    print_tables(f, [rich_table("Soak: every operation, per minute", OP_HEADER, op_rows(f), conditions(f)),
                     rich_table("Soak: the nodes", header, node_rows(f)),
                     rich_table("Soak: minute by minute", MINUTE_HEADER, minute_rows(f))],
                 [*notes(f), f"overall: {MARK[passed(f)]}"])


def plot(f: Figures, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    minutes = [m.number + 1 for m in f.measured]
    fig, (lat, mem, gc, wait) = plt.subplots(4, 1, figsize=(10, 13), sharex=True,
                                             gridspec_kw={"height_ratios": [3, 2, 1.3, 1.3]})
    for i, op in enumerate(OPS):  # ten colours: the ops past them dashed
        if sum(counts(f, op)) >= MIN_SAMPLES:
            lat.plot(minutes, [v / 1000 for v in p99s(f, op)], marker=".", linestyle="-" if i < 10 else "--",
                     label=op)
    lat.set_yscale("log")
    lat.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    lat.set_ylabel("p99 per minute, ms (log)")
    lat.set_title(f"Soak: {conditions(f).split(' (after')[0]}")
    lat.legend(fontsize=8, ncol=3)
    lat.grid(True, which="both", alpha=0.3)
    for name, nodes in zip(NODES, f.nodes, strict=True):
        mem.plot(minutes, [n.rss / 2**20 for n in nodes], marker=".", label=f"node {name}")
        gc.bar([x + (0.2 if name == "b" else -0.2) for x in minutes], [gc_seconds(n) * 1000 for n in nodes],
               width=0.4, label=f"node {name}")
        wait.plot(minutes, [100 * n.wait_s / 60 for n in nodes], marker=".", label=f"node {name} waiting for a CPU")
    wait.plot(minutes, [100 * m.client_wait_s / 60 for m in f.measured], marker=".", label="client waiting for a CPU")
    wait.plot(minutes, [100 * n.machine_s / 60 / f.cores for n in f.nodes[0]], color="grey", linestyle="--",
              label="machine busy (everyone)")
    wait.set_ylabel("% of the minute")
    wait.set_ylim(bottom=0)
    wait.legend(fontsize=8)
    wait.grid(True, alpha=0.3)
    mem.axvline(f.base_minute, color="grey", linestyle=":", label=f"end of minute {f.base_minute}")
    mem.set_ylabel("RSS at the minute's end, MiB")
    mem.set_ylim(bottom=0)
    mem.legend(fontsize=8)
    mem.grid(True, alpha=0.3)
    gc.set_ylabel("GC paused, ms/minute")
    wait.set_xlabel("minute")
    wait.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    gc.legend(fontsize=8)
    gc.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_markdown(f: Figures, path: Path, about: str) -> None:
    image = path.parent / "img" / PLOT.name
    plot(f, image)
    print(f"wrote {image}")
    base = f.base_minute
    header = [h.format(base=base) for h in NODE_HEADER]
    tables = (f"### Summary\n\n{conditions(f)}. Overall: **{MARK[passed(f)]}**.\n\n"
              f"![Soak: p99 per operation per minute, RSS and GC pauses per node](img/{PLOT.name})\n\n"
              f"{markdown_table(OP_HEADER, op_rows(f))}\n\n{markdown_table(header, node_rows(f))}\n\n"
              f"### Minute by minute\n\n{markdown_table(MINUTE_HEADER, minute_rows(f))}\n\n"
              "<details><summary>Every operation's p99 / p99.9 per minute, ms</summary>\n\n"
              f"{markdown_table(*detail_rows(f))}\n\n</details>")
    report.write_markdown(path, "soak", f, profile="it has no profiler.",
                          about=about,
                          tables=tables, notes=notes(f))
