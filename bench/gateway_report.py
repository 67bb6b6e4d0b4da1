"""The figures of a `bench.gateway` run, and how they are shown: a rich table on the terminal, its
section of docs/benchmarks.md."""

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench import report
from bench.report import MARK, markdown_table, print_tables, rich_table

MEMORY_GOAL = 2.0  # gateway KiB per idle session at most this many times the bare server's
THROUGHPUT_GOAL = 0.8  # gateway ping replies/s at least this fraction of the bare server's (same write path)
OLD_THROUGHPUT_GOAL = 0.6  # the goal against the old baseline, whose replies each awaited ws.send()
NOISY = 0.15  # other processes using more than this much of a core disturbed the measurement


@dataclass
class Run:
    """One server measured once: memory with idle sessions, then ping throughput."""

    server: str
    round: int
    idle_sessions: int
    rss_before: int
    rss_after: int
    open_seconds: float
    sessions: int
    replies: int
    seconds: float
    server_cpu: float  # CPU seconds of the server during the measured window
    client_cpu: float  # CPU seconds of all client processes during the window
    other_cpu: float  # CPU seconds anything else on the machine used during the window

    @property
    def kib_per_session(self) -> float:
        return (self.rss_after - self.rss_before) / self.idle_sessions / 1024

    @property
    def rate(self) -> float:
        return self.replies / self.seconds

    @property
    def server_load(self) -> float:
        return self.server_cpu / self.seconds

    @property
    def client_load(self) -> float:
        return self.client_cpu / self.seconds

    @property
    def other_load(self) -> float:
        return self.other_cpu / self.seconds

    @property
    def per_cpu_second(self) -> float:
        return self.replies / self.server_cpu if self.server_cpu else 0.0

    def summary(self) -> str:
        return (f"{self.kib_per_session:.1f} KiB/session ({self.idle_sessions} idle, opened in "
                f"{self.open_seconds:.1f} s); {self.rate:,.0f} replies/s, server CPU {self.server_load:.0%}, "
                f"clients {self.client_load:.0%}, others {self.other_load:.0%}")


@dataclass
class Figures(report.Figures):
    runs: list[Run] = field(default_factory=list)

    def median(self, server: str, attribute: str) -> float:
        return float(statistics.median(getattr(r, attribute) for r in self.runs if r.server == server))

    def ratio(self, attribute: str, baseline: str = "bare") -> float:
        bare = self.median(baseline, attribute)
        return self.median("gateway", attribute) / bare if bare else float("nan")

    def has(self, server: str) -> bool:
        return any(r.server == server for r in self.runs)

    def memory_ok(self) -> bool:
        return self.ratio("kib_per_session") <= MEMORY_GOAL

    def throughput_ok(self) -> bool:
        return self.ratio("rate") >= THROUGHPUT_GOAL


def summary_rows(f: Figures) -> list[list[str]]:
    return [
        ["KiB per idle authenticated session", f"{f.median('bare', 'kib_per_session'):.1f}",
         f"{f.median('gateway', 'kib_per_session'):.1f}", f"{f.ratio('kib_per_session'):.3f}x",
         f"<= {MEMORY_GOAL:.1f}x", MARK[f.memory_ok()]],
        ["ping replies/s", f"{f.median('bare', 'rate'):,.0f}", f"{f.median('gateway', 'rate'):,.0f}",
         f"{f.ratio('rate'):.3f}x", f">= {THROUGHPUT_GOAL:.1f}x", MARK[f.throughput_ok()]],
        ["ping replies per server CPU-second", f"{f.median('bare', 'per_cpu_second'):,.0f}",
         f"{f.median('gateway', 'per_cpu_second'):,.0f}", f"{f.ratio('per_cpu_second'):.3f}x", "", ""],
        *([["ping replies/s, against the old baseline (each reply `await ws.send()`)",
            f"{f.median('bare-send', 'rate'):,.0f}", f"{f.median('gateway', 'rate'):,.0f}",
            f"{f.ratio('rate', 'bare-send'):.3f}x", f">= {OLD_THROUGHPUT_GOAL:.1f}x (old goal)",
            MARK[f.ratio('rate', 'bare-send') >= OLD_THROUGHPUT_GOAL]],
           ["ping replies per server CPU-second, old baseline", f"{f.median('bare-send', 'per_cpu_second'):,.0f}",
            f"{f.median('gateway', 'per_cpu_second'):,.0f}", f"{f.ratio('per_cpu_second', 'bare-send'):.3f}x",
            "", ""]] if f.has("bare-send") else []),
        ["Server CPU while pinging (1 core = 100%)", f"{f.median('bare', 'server_load'):.0%}",
         f"{f.median('gateway', 'server_load'):.0%}", "", "", ""],
        ["Clients' CPU while pinging", f"{f.median('bare', 'client_load'):.0%}",
         f"{f.median('gateway', 'client_load'):.0%}", "", "", ""],
    ]


def conditions(f: Figures) -> str:
    s = f.settings
    return (f"{s['idle_sessions']:,} idle sessions; {s['sessions']:,} sessions pinging with {s['window']} in "
            f"flight each for {s['seconds']:g} s; median of {f.rounds}")


SUMMARY_HEADER = ["Measure", "Bare server", "Gateway", "Gateway ÷ bare", "Goal", "Result"]
RUNS_HEADER = ["Round", "Server", "RSS before, MiB", "RSS after, MiB", "KiB/session", "Open, s",
               "Replies/s", "Server CPU", "Client CPU", "Other CPU", "Replies/CPU-s"]


def run_rows(f: Figures) -> list[list[str]]:
    return [[str(r.round), r.server, f"{r.rss_before / 2**20:.1f}", f"{r.rss_after / 2**20:.1f}",
             f"{r.kib_per_session:.1f}", f"{r.open_seconds:.1f}", f"{r.rate:,.0f}", f"{r.server_load:.0%}",
             f"{r.client_load:.0%}", f"{r.other_load:.0%}", f"{r.per_cpu_second:,.0f}"] for r in f.runs]


def notes(f: Figures) -> list[str]:
    out = []
    client_cores = f.settings["client_cores"]
    if f.median("bare", "client_load") >= 0.9 * client_cores:
        out.append("The client processes used all of their CPU against the bare server: it may be able to "
                   "answer more than measured, so the throughput ratio may flatter the gateway; replies per "
                   "server CPU-second compare the servers' own costs.")
    busy = [r for r in f.runs if r.other_load > NOISY]
    if busy:
        out.append(f"Other processes used more than {NOISY:.0%} of a core during {len(busy)} of {len(f.runs)} "
                   "ping windows (Other CPU), which lowers those runs' replies/s; replies per server "
                   "CPU-second are less sensitive to that.")
    if not f.settings["pinned"]:
        out.append("Servers and clients were not pinned to separate cores (--no-pin).")
    return out


def print_report(f: Figures) -> None:
    print_tables(f, [rich_table("Every run", RUNS_HEADER, run_rows(f)),
                     rich_table("Gateway vs bare websockets + msgspec", SUMMARY_HEADER, summary_rows(f),
                                conditions(f))], notes(f))


def write_markdown(f: Figures, path: Path) -> None:
    s = f.settings
    pinning = ("the server is pinned to one core and the clients to the others" if s["pinned"]
               else "nothing is pinned to a core")
    report.write_markdown(path, "gateway", f, profile="""`--profile PATH` runs the gateway
alone under cProfile and prints where its time goes.""", about=f"""\
The servers run in the same bench run, one after the other ({f.rounds}, rotating which goes
first; the summary shows medians), each as its own process with the same transport settings
(websockets on uvloop, `compression=None`, the gateway's `max_size`, ping interval and close
timeout). The **baseline** (`bench/bare.py`) only decodes each frame with `msgspec.json.decode`
and answers each one that has an `id` with a small msgspec Struct, written the way the gateway
writes its frames: the encoded frame with its header straight to the transport while the socket's
buffer is under 64 KiB (`gateway/wire.py`, shared by both). The **old baseline** (`bare-send`,
shown for comparison with earlier figures) awaited `ws.send()` for every reply, which costs a
coroutine step and a drain check per frame that the gateway does not pay, so it flattered the
gateway; its goal was 0.6x. The **gateway** is `run.py serve`
with one worker, embedded PostgreSQL and Redis, and the per-session rate limit raised out
of the way (1,000,000/s). The load comes from {s['clients']} separate client processes on uvloop
speaking websockets' own Sans-I/O protocol (`websockets.client.ClientProtocol`: no task, future or
lock per frame, so the clients stay cheaper than the server they drive), the same code for both
servers; {pinning}.

- **Memory per idle session**: the server's resident set (`VmRSS`) before and after opening
  {s['idle_sessions']:,} sessions, divided by their number. Each session first sends `auth` with a
  valid token of its own user (technician role) and waits for the `result`; the baseline gets the
  same frame and answers it. {s["warm_sessions"]} sessions are opened and closed first, so one-time
  costs do not count. Goal: the gateway at most {MEMORY_GOAL:.0f}x the baseline.
- **ping throughput**: {s['sessions']:,} authenticated sessions each keep {s['window']}
  `{{"type":"ping","id":"N"}}` frames in flight, sending the next when a reply arrives; replies are
  counted for {s['seconds']:g} s after {s['warmup']:g} s of warm-up. Goal: the gateway at least
  {THROUGHPUT_GOAL}x the baseline's replies/s.
- **CPU** over the same window, from `/proc`: the server's (100% = its one core), the client
  processes' together, and *other*: whatever else the machine ran meanwhile (noise; this machine
  is shared). Replies per server CPU-second compare the servers' own costs even when the machine
  gave one of them less CPU.""", tables=f"""### Summary

{conditions(f)}.

{markdown_table(SUMMARY_HEADER, summary_rows(f))}

### Every run

{markdown_table(RUNS_HEADER, run_rows(f))}""", notes=notes(f))
