"""bench.openloop's figures, tables and Markdown section."""

from dataclasses import dataclass, field
from pathlib import Path

from hdrh.histogram import HdrHistogram

from bench import report
from bench.report import markdown_table, print_tables, rich_table
from bench.session import histogram

PERCENTILES = (("p50", 50.0), ("p99", 99.0), ("p99.9", 99.9))


@dataclass
class FeedPoint:
    side: str  # gateway, redis
    rate: float  # offered, requests/s
    seconds: float  # measured, over all rounds
    sessions: int
    latency: HdrHistogram = field(default_factory=histogram)  # microseconds from due
    round_p99: list[float] = field(default_factory=list)  # microseconds
    replies: int = 0
    errors: int = 0
    cpu_s: float = 0.0  # the gateway's, over the measured windows
    answering_s: float = 0.0  # from each window's opening to its last reply, summed over the rounds
    redis_cpu_s: float = 0.0  # Redis's, over the measured windows
    wait_s: float = 0.0  # the gateway's (or, on the raw side, Redis's) run-queue wait over the rounds

    def add(self, h: HdrHistogram, replies: int, errors: int, cpu_s: float, answering_s: float,
            redis_cpu_s: float, wait_s: float) -> None:
        self.latency.add(h)
        self.round_p99.append(h.get_value_at_percentile(99.0))
        self.replies, self.errors, self.cpu_s = self.replies + replies, self.errors + errors, self.cpu_s + cpu_s
        self.answering_s += answering_s
        self.redis_cpu_s += redis_cpu_s
        self.wait_s += wait_s


@dataclass
class DispatchPoint:
    nodes: int
    sessions: int
    rate: float  # offered, orders/s
    recipients: HdrHistogram = field(default_factory=histogram)  # each technician's order.available, from due
    last: HdrHistogram = field(default_factory=histogram)  # the last technician's, one per order
    round_p99: list[float] = field(default_factory=list)
    orders: int = 0
    cpu_s: float = 0.0  # all gateway processes', over the rounds

    def add(self, recipients: HdrHistogram, last: HdrHistogram, orders: int) -> None:
        self.recipients.add(recipients)
        self.last.add(last)
        self.round_p99.append(recipients.get_value_at_percentile(99.0))
        self.orders += orders


@dataclass
class Figures(report.Figures):
    feed: list[FeedPoint] = field(default_factory=list)
    dispatch: list[list[DispatchPoint]] = field(default_factory=list)


def ms(us: float) -> str:
    return report.ms(us / 1e6)


def cells(h: HdrHistogram) -> list[str]:
    return [*(ms(h.get_value_at_percentile(q)) for _, q in PERCENTILES), ms(h.get_max_value())]


FEED_HEADER = ["Offered/s", "Side", "Answered/s", "Samples", "p50", "p99", "p99.9", "max", "p99 per round",
               "Gateway CPU", "Redis CPU", "Server waiting for a CPU", "p99 ÷ baseline's"]


def feed_rows(f: Figures) -> list[list[str]]:
    rows = []
    base = {p.rate: p for p in f.feed if p.side == "redis"}
    for p in f.feed:
        ratio = report.ratio(p.latency.get_value_at_percentile(99), base[p.rate].latency.get_value_at_percentile(99))
        side = "order.nearby via the gateway" if p.side == "gateway" else "GEOSEARCH from redis-py"
        answered = p.replies / max(p.seconds, p.answering_s)
        rows.append([f"{p.rate:,.0f}", side, f"{answered:,.0f}", f"{p.latency.get_total_count():,}",
                     *cells(p.latency), " / ".join(ms(v) for v in p.round_p99),
                     f"{p.cpu_s / p.seconds:.0%}" if p.side == "gateway" else "", f"{p.redis_cpu_s / p.seconds:.0%}",
                     f"{p.wait_s / max(p.seconds, p.answering_s):.0%}",
                     f"{ratio:.2f}x" if p.side == "gateway" else ""])
    return rows


DISPATCH_HEADER = ["Technicians", "Offered orders/s", "Orders", "Per", "Samples", "p50", "p99", "p99.9", "max",
                   "Gateway CPU per order"]


def dispatch_rows(f: Figures) -> list[list[str]]:
    rows = []
    for points in f.dispatch:
        for p in points:
            where = f"{p.sessions:,} on {'one process' if p.nodes == 1 else f'{p.nodes} processes'}"
            rows.append([where, f"{p.rate:g}", f"{p.orders}", "each technician",
                         f"{p.recipients.get_total_count():,}", *cells(p.recipients), ms(1e6 * p.cpu_s / p.orders)])
            rows.append([where, f"{p.rate:g}", f"{p.orders}", "the last technician", f"{p.last.get_total_count():,}",
                         *cells(p.last), ""])
    return rows


def conditions(f: Figures) -> str:
    s = f.settings
    return (f"feed: {s['nearby_sessions']} technician sessions at Dallas, {s['open_orders']:,} open orders "
            f"({s['in_radius']:,} within {s['radius_mi']:g} mi), {s['rounds']} rounds per rate; dispatch: "
            f"{s['orders_per_round']} orders per round, {s['rounds']} rounds per rate")


def notes(f: Figures) -> list[str]:
    out = ["Latencies count from when each request was due on the timetable, so a server that falls behind shows "
           "the whole queueing delay (a closed loop would send less instead). Answered/s: the replies to the "
           "requests due in the windows over the time from each window's opening to its last reply; below the "
           "offered rate, the side did not hold that rate. Server waiting for a CPU: the share of that time the "
           "gateway (on the raw side, Redis) was runnable but not running (/proc/PID/schedstat).",
           "Dispatch 'each technician': every recipient of every order is a sample (order.create due -> that "
           "technician's order.available); 'the last technician': one sample per order, too few for a p99.9 "
           "(there it is the maximum). No technicians beyond the connected ones are in the GEO index here "
           "(bench.orders seeds 195,000 more)."]
    if f.settings["pin"]:
        out.append("The feed's gateway and the one-process dispatch gateway were pinned to one core, the clients to "
                   "the other; the two dispatch processes, their clients, PostgreSQL and Redis share both cores.")
    errors = sum(p.errors for p in f.feed)
    if errors:
        out.append(f"{errors:,} feed requests were answered with an error or lost.")
    return out


def print_report(f: Figures) -> None:
    print_tables(f, [rich_table("order.nearby, open loop", FEED_HEADER, feed_rows(f), conditions(f)),
                     rich_table("Dispatch, open loop", DISPATCH_HEADER, dispatch_rows(f))], notes(f))


def write_markdown(f: Figures, path: Path, about: str) -> None:
    tables = (f"### Summary\n\n{conditions(f)}.\n\n#### order.nearby at fixed offered rates\n\n"
              f"{markdown_table(FEED_HEADER, feed_rows(f))}\n\n#### Dispatch at fixed offered rates\n\n"
              f"{markdown_table(DISPATCH_HEADER, dispatch_rows(f))}")
    report.write_markdown(path, "openloop", f, profile="it has no profiler.", about=about, tables=tables,
                          notes=notes(f))
