"""The figures of a `bench.fanout` run, and how they are shown: rich tables on the terminal, its
section of docs/benchmarks.md, a plot of bytes and CPU per node against the node count."""

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench import report
from bench.report import markdown_table, ms, percentile, print_tables, ratio, rich_table


@dataclass
class Run:
    """One routing with one node count: per-node figures over all its announcements."""

    routing: str
    nodes: int
    sessions: int
    orders: int
    bytes_received: list[float]  # per node: payload bytes received for delivery to many users
    recipients_decoded: list[float]  # per node: recipient ids decoded from other nodes' messages
    cpu: list[float]  # per node: CPU seconds over the announcements, net of its rate at rest
    rest_cpu: list[float]  # per node: CPU seconds per second at rest (heartbeats, keep-alive pings)
    redis_cpu: float
    seconds: float
    latencies: list[float]  # per order: from order.create leaving to the last technician's order.available

    def per_node(self, values: list[float]) -> float:
        """Mean over the nodes, per announcement."""
        return sum(values) / self.nodes / self.orders

    @property
    def bytes_per_node(self) -> float:
        return self.per_node(self.bytes_received)

    @property
    def other_bytes(self) -> float:
        """Mean of the non-publishing nodes' bytes, per announcement (nan with one node)."""
        others = self.bytes_received[1:]
        return sum(others) / len(others) / self.orders if others else float("nan")

    @property
    def decoded_per_node(self) -> float:
        return self.per_node(self.recipients_decoded)

    @property
    def cpu_per_node(self) -> float:
        return self.per_node(self.cpu)

    @property
    def publisher_cpu(self) -> float:
        """The first node's, per announcement: it holds the consumer, so it also creates the order,
        searches and routes."""
        return self.cpu[0] / self.orders

    @property
    def other_cpu(self) -> float:
        """Mean of the other nodes', per announcement (nan with one node)."""
        others = self.cpu[1:]
        return sum(others) / len(others) / self.orders if others else float("nan")

    @property
    def all_cpu(self) -> float:
        return sum(self.cpu) / self.orders

    def summary(self) -> str:
        return (f"{self.routing}, {self.nodes} node(s): {self.bytes_per_node / 1024:.1f} KiB and "
                f"{self.decoded_per_node:,.0f} recipients decoded per node per announcement; CPU per node "
                f"{ms(self.cpu_per_node)} (publisher {ms(self.publisher_cpu)}, others {ms(self.other_cpu)}); "
                f"Redis {ms(self.redis_cpu / self.orders)}; to the last technician p50 "
                f"{ms(percentile(self.latencies, 0.5))}, p99 {ms(percentile(self.latencies, 0.99))}")


@dataclass
class Figures(report.Figures):
    runs: list[Run] = field(default_factory=list)

    def run(self, routing: str, nodes: int) -> Run | None:
        return next((r for r in self.runs if r.routing == routing and r.nodes == nodes), None)

    @property
    def node_counts(self) -> list[int]:
        return sorted({r.nodes for r in self.runs})


HEADER = ("Routing", "Nodes", "KiB received per node", "KiB per other node", "Recipients decoded per node",
          "CPU per node",
          "CPU, publishing node", "CPU per other node", "CPU, all nodes", "Redis CPU", "p50 to the last",
          "p99 to the last")
RATIO_HEADER = ("Nodes", "Bytes per node", "Bytes per other node", "CPU per node", "CPU per other node",
                "CPU, all nodes", "p99")


def _kib(b: float) -> str:
    return f"{b / 1024:,.1f}" if b == b else "-"


def rows(f: Figures) -> list[list[str]]:
    out = []
    for count in f.node_counts:
        for routing in ("nodes", "multicast"):
            r = f.run(routing, count)
            if r is None:
                continue
            out.append([routing, str(count), _kib(r.bytes_per_node), _kib(r.other_bytes), f"{r.decoded_per_node:,.0f}",
                        ms(r.cpu_per_node), ms(r.publisher_cpu), ms(r.other_cpu), ms(r.all_cpu),
                        ms(r.redis_cpu / r.orders), ms(percentile(r.latencies, 0.5)),
                        ms(percentile(r.latencies, 0.99))])
    return out


def ratio_rows(f: Figures) -> list[list[str]]:
    out = []
    for count in f.node_counts:
        n, m = f.run("nodes", count), f.run("multicast", count)
        if n is None or m is None:
            continue
        cells = [ratio(n.bytes_per_node, m.bytes_per_node), ratio(n.other_bytes, m.other_bytes),
                 ratio(n.cpu_per_node, m.cpu_per_node),
                 ratio(n.other_cpu, m.other_cpu), ratio(n.all_cpu, m.all_cpu),
                 ratio(percentile(n.latencies, 0.99), percentile(m.latencies, 0.99))]
        out.append([str(count), *(f"{c:.2f}x" if c == c else "-" for c in cells)])
    return out


def notes(f: Figures) -> list[str]:
    s = f.settings
    rest = statistics.mean(c for r in f.runs for c in r.rest_cpu) if f.runs else 0.0
    return [
        f"per announcement, averaged over {s['orders']} orders per row; every order reaches all "
        f"{s['sessions']:,} technicians (all within its {s['radius_mi']:g}-mile radius). Bytes are the pub/sub "
        "payloads a node received for delivery to many users (its `gateway_delivery_bytes_received_total` on the "
        "node and multicast channels, its own multicast echo included); Redis's framing and channel names are not "
        "counted.",
        f"CPU is each node's (/proc/<pid>/stat) over the announcements minus its rate at rest measured just before "
        f"for {s['idle_s']:g} s (on average {rest:.1%} of a core: heartbeats and keep-alive pings), so it is the "
        "cost of the announcements. The publishing node (the consumer's) also writes the order to PostgreSQL, "
        "searches the GEO index and, with per-node routing, looks the recipients up in the presence directory; "
        "its figure is apart.",
        "All nodes, the client processes and Redis share the machine's 2 cores, unpinned: the latencies "
        "include that contention (4 nodes compete for the same 2 cores as 1) and are no claim about how latency "
        "scales on separate machines; bytes and recipients decoded do not depend on it, CPU seconds little.",
        "Not covered: technicians outside the radius in the GEO index (bench.orders has 200,000), users with "
        "sessions on two nodes (each would be in both nodes' shares), more than 4 nodes. The directory lookup is "
        "one HMGET of the recipients, so its cost grows with recipients, not nodes; a multicast to N nodes "
        "costs N x the recipient list received.",
    ]


def print_report(f: Figures) -> None:
    title = f"Delivery across nodes: {f.settings['sessions']:,} technicians, per announcement"
    print_tables(f, [rich_table(title, HEADER, rows(f)),
                     rich_table("Per-node routing against multicast (ratio; lower is better)", RATIO_HEADER,
                                ratio_rows(f))], notes(f))


def plot(f: Figures, path: Path) -> None:
    """Bytes and CPU per node per announcement against the node count, both routings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = f.node_counts
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for routing, style, color in (("nodes", "o-", "tab:blue"), ("multicast", "s--", "tab:orange")):
        runs = [f.run(routing, c) for c in counts]
        xs = [c for c, r in zip(counts, runs, strict=True) if r is not None]
        got = [r for r in runs if r is not None]
        left.plot(xs, [r.bytes_per_node / 1024 for r in got], style, color=color, label=f"{routing}: mean per node")
        right.plot(xs, [r.cpu_per_node * 1000 for r in got], style, color=color, label=f"{routing}: mean per node")
        many = [r for r in got if r.nodes > 1]
        if many:
            left.plot([r.nodes for r in many], [r.other_bytes / 1024 for r in many], style, color=color, alpha=0.4,
                      label=f"{routing}: per non-publishing node")
            right.plot([r.nodes for r in many], [r.other_cpu * 1000 for r in many], style, color=color, alpha=0.4,
                       label=f"{routing}: per non-publishing node")
    left.set(title="Received from Redis per node", xlabel="nodes", ylabel="KiB per announcement", xticks=counts)
    right.set(title="CPU per node", xlabel="nodes", ylabel="ms per announcement", xticks=counts)
    for axis in (left, right):
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle(f"One announcement to {f.settings['sessions']:,} technicians spread over the nodes")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(f: Figures, path: Path) -> None:
    s = f.settings
    about = (f"Orders are announced to {s['sessions']:,} on-duty technicians spread evenly over 1, 2 and 4 gateway "
             "nodes (processes on one embedded PostgreSQL and Redis), routed per node (`DELIVERY_ROUTING=nodes`, "
             "the default: each node receives its own technicians' share) and by multicast (every node receives "
             "and decodes every recipient: the routing before issue 13), in the same run the same way. A consumer "
             f"on the first node creates {s['orders']} orders one after another, at least {s['spacing']:g} s "
             "apart (`order.create`: the production path).")
    tables = ("### Summary\n\nPer announcement:\n\n" + markdown_table(HEADER, rows(f))
              + "\n\nPer-node routing against multicast (ratio; lower is better):\n\n"
              + markdown_table(RATIO_HEADER, ratio_rows(f)))
    if s.get("plot"):
        tables += f"\n\n![Bytes and CPU per node per announcement against the node count](img/{Path(s['plot']).name})"
    report.write_markdown(path, "fanout", f, "has no `--profile`.", about, tables, notes(f))
