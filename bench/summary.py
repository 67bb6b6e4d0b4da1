"""admin.summary on a year of orders (1 million by default): the gateway over a websocket session
against the same SQL over asyncpg, in the same run.

    .venv/bin/python -m bench.summary [--quick] [--markdown docs/benchmarks.md] [--profile DIR]

The orders of 365 days over the demo catalog (10 brands, 20 SKUs, three service types) are put
into a scratch database with COPY, day after day as they would have been written: each with its
timeline (awaiting payment, open, accepted, on the way, in service, completed; some released and
taken again, some cancelled, the last two days' still in flight), its declines, its payment, its
technician's transfer once due, its rating. Then `VACUUM ANALYZE` (what autovacuum does on a live
database), and the gateway starts on it. Measured, each case over the same sequence of ranges:

1. One brand's month by day, the brand with the most orders (Samsung, 3 SKUs of 20), each run the
   next of the 12 months. Goal: p95 under 500 ms through the gateway.
2. That brand's year by week.
3. Every brand's month by day and SKU (an admin's view of the whole platform).

Each run sends `admin.summary` from an admin's session and waits for the reply; the baseline runs
the same two statements (storage.summary's) over an asyncpg pool made as the gateway's, from this
process, the runs alternating with the gateway's, so the ratio is the gateway's own share: the
frame, the role and scope checks, the audit log's row, building and encoding the reply.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python bench/summary.py`: import from the project root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import itertools
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import uvloop

from bench import cli
from bench.profiled import print_stats, switches
from bench.servers import Backends, backends, cores, gateway_server
from bench.summary_report import Case, Figures, Seeded, print_report, write_markdown
from gateway.app import token_issuer
from gateway.config import Config
from handlers.money.scheduler import share
from protocol.auth import Auth
from protocol.client import Client
from protocol.summary import SummaryGet
from storage import summary
from storage.db import connect_postgres
from storage.migrate import migrate

SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
END = datetime(2026, 12, 1, tzinfo=UTC)  # the seeded year ends here: its 12 months are whole
BRAND = "samsung"
TECHNICIANS = 5000
FEE_BP = 1500  # MoneyRules' default platform fee
ORDER_COLUMNS = ["id", "consumer_id", "created_by", "brand_id", "sku_id", "service_type", "description", "address_enc",
                 "lat", "lng", "price_cents", "currency", "state", "technician_id", "payout_cents", "rating",
                 "payment_state", "created_at", "updated_at", "opened_at", "accepted_at", "assigned_at",
                 "completed_at", "accepts"]
EVENT_COLUMNS = ["order_id", "at", "actor_id", "actor_role", "from_state", "to_state"]
PAYMENT_COLUMNS = ["order_id", "intent_id", "policy", "amount_cents", "currency", "charge_id", "captured_cents",
                   "refunded_cents", "created_at", "updated_at"]
TRANSFER_COLUMNS = ["order_id", "technician_id", "account_id", "transfer_id", "amount_cents", "reversed_cents",
                    "refunded_basis", "currency", "created_at"]
DECLINE_COLUMNS = ["technician_id", "order_id", "at"]
STARS = (5,) * 55 + (4,) * 25 + (3,) * 10 + (2,) * 5 + (1,) * 5


@dataclass(frozen=True)
class Settings:
    orders: int
    runs: int
    year_runs: int
    seed: int
    clients: int
    pin: bool

    @property
    def budget_s(self) -> int:
        """A hard bound on the whole run; generous, it only stops a bench that hangs."""
        return int(300 + self.orders / 2000 + 2 * self.runs * 3 + 2 * self.year_runs * 30)


def parser() -> argparse.ArgumentParser:
    p = cli.parser("summary", __doc__)
    p.add_argument("--orders", type=int, default=1_000_000, help="orders seeded over the year")
    p.add_argument("--runs", type=int, default=48, help="runs of the month cases per side (4 times the 12 months)")
    p.add_argument("--year-runs", type=int, default=6, help="runs of the year-by-week case per side")
    p.add_argument("--seed", type=int, default=9, help="the random seed of the seeded orders")
    return cli.common_options(p, pinned="the gateway", quick="a few minutes", profile=(
        "DIR", "instead: run the month case through the gateway under cProfile (no baseline), write "
               "DIR/summary.prof and print where the time goes"))


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        args.orders, args.runs, args.year_runs = 100_000, 12, 2
    if min(args.orders, args.runs, args.year_runs) <= 0:
        raise SystemExit("--orders, --runs and --year-runs must be positive")
    return Settings(args.orders, args.runs, args.year_runs, args.seed, args.clients, args.pin)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("summary", argv, parser(), settings_from, measure, profile, print_report, write_markdown)


# -- the seeded year --------------------------------------------------------------------------
class Year:
    """Generates the year's rows day by day (the generator is seeded: every run seeds the same)."""

    def __init__(self, s: Settings, prices: dict[tuple[str, str], int], skus: list[tuple[str, str]]) -> None:
        self.rng = random.Random(s.seed)
        self.orders = s.orders
        self.prices, self.skus = prices, skus
        self.seeded = Seeded()

    def days(self) -> Iterator[tuple[list[tuple[Any, ...]], ...]]:
        """Per day: (orders, events, payments, transfers, declines), each in the order written."""
        start = END - timedelta(days=365)
        per_day = self.orders / 365
        made = 0
        for day in range(365):
            count = round(per_day * (day + 1)) - made
            made += count
            yield self.day(start + timedelta(days=day), count)

    def day(self, start: datetime, count: int) -> tuple[list[tuple[Any, ...]], ...]:
        rng = self.rng
        orders: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        payments: list[tuple[Any, ...]] = []
        transfers: list[tuple[Any, ...]] = []
        declines: list[tuple[Any, ...]] = []
        moments = sorted(start + timedelta(seconds=rng.random() * 86_400) for _ in range(count))
        for created in moments:
            self.one(created, orders, events, payments, transfers, declines)
        events.sort(key=lambda e: e[1])  # the timeline is written as it happens, orders interleaved
        declines.sort(key=lambda d: d[2])
        self.seeded.add(orders, events, payments, transfers, declines)
        return orders, events, payments, transfers, declines

    def one(self, created: datetime, orders: list[tuple[Any, ...]], events: list[tuple[Any, ...]],
            payments: list[tuple[Any, ...]], transfers: list[tuple[Any, ...]],
            declines: list[tuple[Any, ...]]) -> None:
        rng = self.rng
        oid, consumer = uuid.uuid4(), f"cons-{rng.randrange(200_000)}"
        brand, sku = rng.choice(self.skus)
        service = rng.choice(("repair", "repair", "repair", "installation", "maintenance"))
        price = self.prices[sku, service]
        age = (END - created).total_seconds()
        # Where this order stops: most complete; some are cancelled on the way; the last two days'
        # are partly still in flight.
        r = rng.random()
        if age < 2 * 86_400 and r < 0.3:
            last = rng.choice(("awaiting_payment", "open", "open", "accepted", "en_route", "in_service"))
        elif r < 0.03:
            last = "cancelled@awaiting_payment"
        elif r < 0.09:
            last = "cancelled@open"
        elif r < 0.12:
            last = "cancelled@accepted"
        else:
            last = "completed"
        steps = ["awaiting_payment", "open", "accepted", "en_route", "in_service", "completed"]
        stop = last.split("@")[-1]
        path = steps[:steps.index(stop) + 1]
        at, technician = created, None
        timeline: list[tuple[datetime, str | None, str, str | None, str]] = []
        previous: str | None = None
        for state in path:
            if state == "open" and previous == "awaiting_payment":
                at += timedelta(seconds=rng.uniform(2, 30))  # the card is authorized
            elif state == "accepted":
                at += timedelta(seconds=rng.expovariate(1 / 240))
                for tech in rng.sample(range(TECHNICIANS), rng.choice((0, 0, 0, 1, 1, 2, 3))):
                    declines.append((f"tech-{tech}", oid, at - timedelta(seconds=rng.uniform(0, 60))))
                technician = f"tech-{rng.randrange(TECHNICIANS)}"
                if rng.random() < 0.04:  # released, announced again, taken by another
                    timeline.append((at, technician, "technician", previous, "accepted"))
                    at += timedelta(seconds=rng.uniform(300, 1200))
                    timeline.append((at, technician, "technician", "accepted", "open"))
                    previous = "open"
                    at += timedelta(seconds=rng.expovariate(1 / 240))
                    technician = f"tech-{rng.randrange(TECHNICIANS)}"
            elif state == "en_route":
                at += timedelta(seconds=rng.uniform(300, 1800))
            elif state == "in_service":
                at += timedelta(seconds=rng.uniform(900, 3600))
            elif state == "completed":
                at += timedelta(seconds=rng.uniform(1800, 9000))
            actor, role = ((consumer, "consumer") if state == "awaiting_payment" else
                           ("system", "system") if state == "open" else (technician, "technician"))
            timeline.append((at, actor, role, previous, state))
            previous = state
        if last.startswith("cancelled"):
            at += timedelta(seconds=rng.uniform(60, 3600))
            timeline.append((at, consumer, "consumer", previous, "cancelled"))
            stop = "cancelled"
        events.extend((oid, t, actor, role, before, after) for t, actor, role, before, after in timeline)
        # The moments the order keeps of its timeline (as migration 0014's trigger sets them).
        accepted = [t for t, _, _, _, after in timeline if after == "accepted"]
        opened = next((t for t, _, _, _, after in timeline if after == "open"), None)
        finished = timeline[-1][0] if stop == "completed" else None
        completed = stop == "completed"
        rating = rng.choice(STARS) if completed and rng.random() < 0.6 else None
        captured = price if completed else 0
        refunded = rng.randrange(price // 5, price // 2) if completed and rng.random() < 0.05 else 0
        payment_state = ("partially_refunded" if refunded else "paid") if completed else (
            "canceled" if stop == "cancelled" else "unpaid" if stop == "awaiting_payment" else "authorized")
        orders.append((oid, consumer, consumer, brand, sku, service, "Bench order", b"bench: not an envelope",
                       40.7, -74.0, price, "usd", stop, technician,
                       price * (10_000 - FEE_BP) // 10_000 if completed else None, rating, payment_state, created, at,
                       opened, accepted[0] if accepted else None, accepted[-1] if accepted else None, finished,
                       len(accepted)))
        payments.append((oid, f"pi_{oid.hex}", "capture_at_completion", price, "usd",
                         f"ch_{oid.hex}" if completed else None, captured, refunded, created, at))
        if completed and (END - at).total_seconds() > 86_400:  # paid out a day after completion
            amount = share(captured, refunded, FEE_BP)
            transfers.append((oid, technician, f"acct_{technician}", f"tr_{oid.hex}", amount, 0, refunded, "usd",
                              at + timedelta(days=1)))


async def seed(s: Settings, database_url: str) -> Seeded:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        prices = {(r["sku_id"], r["service_type"]): r["price_cents"]
                  for r in await conn.fetch("SELECT sku_id, service_type, price_cents FROM catalog_prices")}
        skus = [(r["brand_id"], r["id"]) for r in await conn.fetch("SELECT id, brand_id FROM skus ORDER BY id")]
        year = Year(s, prices, skus)
        started = time.monotonic()
        for n, (orders, events, payments, transfers, declines) in enumerate(year.days(), 1):
            await conn.copy_records_to_table("orders", records=orders, columns=ORDER_COLUMNS)
            await conn.copy_records_to_table("order_events", records=events, columns=EVENT_COLUMNS)
            await conn.copy_records_to_table("payments", records=payments, columns=PAYMENT_COLUMNS)
            await conn.copy_records_to_table("transfers", records=transfers, columns=TRANSFER_COLUMNS)
            await conn.copy_records_to_table("order_declines", records=declines, columns=DECLINE_COLUMNS)
            if n % 30 == 0:
                print(f"  {n} days, {year.seeded.orders:,} orders in {time.monotonic() - started:.0f} s", flush=True)
        year.seeded.copy_s = time.monotonic() - started
        started = time.monotonic()
        await conn.execute("VACUUM ANALYZE")
        year.seeded.vacuum_s = time.monotonic() - started
        year.seeded.brand_month = await conn.fetchval(
            "SELECT count(*) FROM orders WHERE brand_id = $1 AND created_at >= $2 AND created_at < $3",
            BRAND, END - timedelta(days=30), END)
        year.seeded.size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
        return year.seeded
    finally:
        await conn.close()


# -- the cases ----------------------------------------------------------------------------------
def months() -> list[tuple[datetime, datetime]]:
    """The seeded year's 12 whole months (UTC)."""
    firsts = [datetime(2025 + (11 + k) // 12, (11 + k) % 12 + 1, 1, tzinfo=UTC) for k in range(13)]
    return list(itertools.pairwise(firsts))


def cases(s: Settings) -> list[tuple[str, int, Callable[[int], SummaryGet]]]:
    month = months()
    year = (END - timedelta(days=365), END)
    return [
        (f"{BRAND}, a month by day", s.runs,
         lambda i: SummaryGet(since=month[i % 12][0], until=month[i % 12][1], brand=BRAND)),
        (f"{BRAND}, the year by week", s.year_runs,
         lambda i: SummaryGet(since=year[0], until=year[1], brand=BRAND, granularity="week")),
        ("every brand, a month by day and SKU", max(4, s.runs // 4),
         lambda i: SummaryGet(since=month[i % 12][0], until=month[i % 12][1], group_by_sku=True)),
    ]


async def baseline_call(pool: asyncpg.Pool, req: SummaryGet) -> int:
    """storage.summary's two statements with the handler's arguments (an admin: brands None or [brand])."""
    rows = await summary.summary(pool, brands=[req.brand] if req.brand else None, sku=req.sku, since=req.since,
                                 until=req.until, granularity=req.granularity, tz=req.tz, by_sku=req.group_by_sku,
                                 limit=20_001)
    await summary.buckets(pool, req.since, req.until, req.granularity, req.tz)
    return len(rows)


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def run_cases(s: Settings, url: str, database_url: str, config: Config, figures: Figures) -> None:
    token = token_issuer(config).mint(f"bench-admin-{uuid.uuid4().hex[:8]}", "admin")[0]
    pool = await connect_postgres(database_url, config.db_pool_size)
    client = await Client.connect(url, max_size=None)
    try:
        await client.request(Auth(token=token))
        for name, runs, request in cases(s):
            case = Case(name=name, runs=runs)
            first = await client.request(request(0), timeout=120)
            case.rows, case.orders = len(first.rows), first.total.orders.total
            await baseline_call(pool, request(0))  # both warmed up
            for i in range(runs):
                req = request(i)
                sides: list[tuple[list[float], Callable[[], Awaitable[Any]]]] = [
                    (case.gateway, lambda req=req: client.request(req, timeout=120)),  # type: ignore[misc]
                    (case.baseline, lambda req=req: baseline_call(pool, req))]  # type: ignore[misc]
                for kept, call in sides if i % 2 else sides[::-1]:
                    kept.append(await timed(call))
            print(f"  {case.summary()}", flush=True)
            figures.cases.append(case)
    finally:
        await client.close()
        await pool.close()


def measure(s: Settings, command: str) -> Figures:
    server_cpus, _ = cores(s.pin)
    figures = Figures(command=command, started=time.time(),
                      settings=vars(s) | {"pinned": server_cpus is not None, "brand": BRAND, "rounds": 1})
    with backends("bench-summary-") as b:
        figures.seeded = seeded(s, b)
        config = Config(data_dir=b.root / "gateway", secret=SECRET)
        print("starting the gateway ...", flush=True)
        with gateway_server(b.root / "gateway.log", server_cpus, database_url=b.database_url, redis_url=b.redis_url,
                            data_dir=config.data_dir, secret=SECRET) as server:
            uvloop.run(run_cases(s, server.url, b.database_url, config, figures))
    figures.seconds = time.time() - figures.started
    return figures


def seeded(s: Settings, b: Backends) -> Seeded:
    print(f"seeding {s.orders:,} orders with COPY ...", flush=True)
    done = asyncio.run(seed(s, b.database_url))
    print(f"  {done.describe()}", flush=True)
    return done


def profile(s: Settings, folder: Path) -> None:
    """The month case through the gateway under cProfile."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "summary.prof"
    path.unlink(missing_ok=True)
    server_cpus, _ = cores(s.pin)
    with backends("bench-summary-") as b:
        seeded(s, b)
        config = Config(data_dir=b.root / "gateway", secret=SECRET)
        launcher = [sys.executable, "-m", "bench.profiled", str(path)]
        with gateway_server(b.root / "gateway.log", server_cpus, database_url=b.database_url, redis_url=b.redis_url,
                            data_dir=config.data_dir, secret=SECRET, launcher=launcher) as server:
            on, off = switches(server.pid)

            async def month() -> None:
                token = token_issuer(config).mint("bench-admin", "admin")[0]
                client = await Client.connect(server.url, max_size=None)
                try:
                    await client.request(Auth(token=token))
                    _, runs, request = cases(s)[0]
                    on()
                    for i in range(runs):
                        await client.request(request(i), timeout=120)
                    off()
                finally:
                    await client.close()

            uvloop.run(month())
            deadline = time.monotonic() + 30  # the stats are written on `off`, before the gateway stops
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
    print_stats(path, 30, r"gateway|handlers|storage|protocol|websockets|asyncpg", 40)


if __name__ == "__main__":
    cli.run(main)
