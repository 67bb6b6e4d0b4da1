"""What every bench's report shares: the figures' common part, percentiles and durations, the
machine's description, PASS/FAIL tables on the terminal, Markdown tables, and docs/benchmarks.md,
where each bench owns one section between its markers."""

import math
import os
import platform
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# The sections of docs/benchmarks.md, in order: name -> (title, the command that writes it).
SECTIONS = {
    "gateway": ("The gateway against a bare websockets server",
                ".venv/bin/python -m bench.gateway --markdown docs/benchmarks.md"),
    "orders": ("Location ingest, dispatch and the order feed",
               ".venv/bin/python -m bench.orders --markdown docs/benchmarks.md"),
    "openloop": ("Order feed and dispatch in an open loop",
                 ".venv/bin/python -m bench.openloop --markdown docs/benchmarks.md"),
    "ingest": ("Paced ingest: thousands of technicians in one process",
               ".venv/bin/python -m bench.ingest --markdown docs/benchmarks.md"),
    "chat": ("Chat: message latency and throughput",
             ".venv/bin/python -m bench.chat --markdown docs/benchmarks.md"),
    "fanout": ("Delivery across nodes: per-node routing against multicast",
               ".venv/bin/python -m bench.fanout --markdown docs/benchmarks.md --plot docs/img/fanout.png"),
    "summary": ("Back-office summaries on a year of orders",
                ".venv/bin/python -m bench.summary --markdown docs/benchmarks.md"),
    "presence": ("Presence: a burst of sign-ins against Redis's other clients",
                 ".venv/bin/python -m bench.presence --markdown docs/benchmarks.md"),
    "ai": ("Help with AI: concurrent streamed conversations",
           ".venv/bin/python -m bench.ai --markdown docs/benchmarks.md"),
    "soak": ("Mixed-load soak: two nodes for half an hour",
             ".venv/bin/python -m bench.soak --markdown docs/benchmarks.md"),
    "storm": ("Reconnect storm: a node of 15,000 sessions stopped",
              ".venv/bin/python -m bench.storm --markdown docs/benchmarks.md"),
}
MARK = {True: "PASS", False: "FAIL"}


@dataclass
class Figures:
    """What every bench's figures hold: the command, its settings, when it started, how long it took."""

    command: str
    settings: dict[str, Any]
    started: float
    seconds: float = 0.0

    @property
    def rounds(self) -> str:
        n = self.settings["rounds"]
        return f"{n} round{'s' * (n > 1)}"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of them at or below it (p99 of 100 is the 99th)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages = ", ".join(f"{name} {version(name)}" for name in ("websockets", "uvloop", "msgspec"))
    return (f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable){', ' + model if model else ''}; "
            f"Linux {platform.release()}; Python {platform.python_version()}; {packages}")


def console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 140)  # not 80 columns in a log


def rich_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], caption: str | None = None) -> Table:
    """First column left-aligned, the others right; PASS green, FAIL red."""
    table = Table(title=title, caption=caption)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    style = {"PASS": "[green]PASS[/]", "FAIL": "[bold red]FAIL[/]"}
    for row in rows:
        table.add_row(*(style.get(cell, cell) for cell in row))
    return table


def print_tables(f: Figures, tables: Sequence[Table], notes: Sequence[str]) -> None:
    """A bench's report on the terminal: its tables, its notes, the command and the machine."""
    out = console()
    for table in tables:
        out.print(table)
    for note in notes:
        out.print(f"[yellow]note:[/] {note}")
    out.print(f"command: {f.command}  ({f.seconds:.0f} s; {machine()})")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


SECTION = re.compile(r"<!-- bench:([\w-]+):start -->\n(.*?)\n?<!-- bench:\1:end -->", re.DOTALL)


def write_section(path: Path, name: str, text: str) -> None:
    """Put `text` (Markdown starting with a `## ` heading) between the markers of section `name`
    in `path`, keeping the other sections as they are. The file is rewritten as a short index, then
    the sections: those of SECTIONS in its order, then any other in the order found. Notes written
    by hand go between markers named `notes-...` (kept, listed first); text outside any markers
    (an older unmarked report) is dropped."""
    old = path.read_text() if path.exists() else ""
    sections = {found.group(1): found.group(2).strip("\n") for found in SECTION.finditer(old)}
    sections[name] = text.strip("\n")
    notes = [n for n in sections if n.startswith("notes-")]
    order = notes + [n for n in SECTIONS if n in sections] + [n for n in sections if n not in SECTIONS
                                                               and n not in notes]
    index = ["# Benchmarks", "",
             "Each section below is written by its own command, which replaces only that section;",
             "`make bench` runs them all. `--quick` makes any of them a smoke run.", ""]
    for other in order:
        heading = re.match(r"#+ *(.+)", sections[other])
        if other in notes:
            title = heading.group(1) if heading else other
            index.append(f"- [{title}](#{_anchor(title)}): notes")
            continue
        title, command = SECTIONS.get(other, (heading.group(1) if heading else other,
                                              f".venv/bin/python -m bench.{other} --markdown docs/benchmarks.md"))
        index.append(f"- [{title}](#{_anchor(title)}): `{command}`")
    parts = ["\n".join(index)]
    for other in order:
        start, end = _markers(other)
        parts.append(f"{start}\n{sections[other]}\n{end}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(parts) + "\n")


def write_markdown(path: Path, name: str, f: Figures, profile: str, about: str, tables: str,
                   notes: Sequence[str]) -> None:
    """Bench `name`'s section of `path`: its heading, where and when it came from, what its
    `--profile` does (`profile`, a sentence's end), how it measures (`about`), the machine, its
    `tables` (Markdown, from `### Summary` on) and its notes."""
    title, command = SECTIONS[name]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(f.started))
    text = f"""## {title}

Generated by `{f.command}` on {when}. Regenerate with `make bench`, or this section alone with
`{command}`; `--quick` is a smoke run and {profile}

{about}

Machine: {machine()}. The whole bench took {f.seconds:.0f} s.

{tables}
"""
    if notes:
        text += "\n" + "\n".join(f"Note: {n}" for n in notes) + "\n"
    write_section(path, name, text)
