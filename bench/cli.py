"""What the benches' command lines share: the options every bench takes after its own, and the run
around its parts (settings, the time budget, measure or profile, the report, its Markdown section)."""

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from bench.servers import stopped_by_signals


class Budgeted(Protocol):
    @property
    def budget_s(self) -> int: ...


S = TypeVar("S", bound=Budgeted)
F = TypeVar("F")


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"python -m bench.{name}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def common_options(p: argparse.ArgumentParser, *, profile: tuple[str, str], pinned: str = "the server",
                   quick: str = "about a minute", markdown: str = "the report's section") -> argparse.ArgumentParser:
    """--clients, --no-pin, --quick, --markdown and --profile (its metavar and help): the help
    texts say what this bench pins, how long its quick run takes, what it writes."""
    p.add_argument("--clients", type=int, default=2, help="client processes")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help=f"do not pin {pinned} to one core and the clients to the others")
    p.add_argument("--quick", action="store_true", help=f"small numbers: a smoke run in {quick}")
    p.add_argument("--markdown", type=Path, metavar="PATH", help=f"also write {markdown} to PATH")
    p.add_argument("--profile", type=Path, metavar=profile[0], help=profile[1])
    return p


def main(name: str, argv: Sequence[str] | None, p: argparse.ArgumentParser,
         settings_from: Callable[[argparse.Namespace], S], measure: Callable[[S, str], F],
         profile: Callable[[S, Path], None], print_report: Callable[[F], None],
         write_markdown: Callable[[F, Path], None]) -> int:
    """Measure (or, with --profile, profile) within the settings' time budget, print the report
    and, with --markdown, write it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    settings = settings_from(args)
    with stopped_by_signals(settings.budget_s):
        if args.profile is not None:
            profile(settings, args.profile.absolute())
            return 0
        figures = measure(settings, shlex.join(["python", "-m", f"bench.{name}", *argv]))
    print_report(figures)
    if args.markdown is not None:
        write_markdown(figures, args.markdown)
        print(f"wrote {args.markdown}")
    return 0


def run(main: Callable[[], int]) -> None:
    """`python -m bench.NAME`: exit with main's status; Ctrl-C ends it quietly, everything stopped."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        sys.exit(130)
