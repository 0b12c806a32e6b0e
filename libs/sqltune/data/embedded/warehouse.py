"""A small, seeded e-commerce + subscriptions + ML-predictions warehouse.

One schema definition (:data:`TABLES`) renders to SQLite, DuckDB and PostgreSQL DDL. Types are chosen so
that the same gold queries return the same results on every engine: dates are ``TEXT`` holding
``YYYY-MM-DD`` in SQLite and ``DATE`` elsewhere, timestamps ``TEXT`` ``YYYY-MM-DD HH:MM:SS`` /
``TIMESTAMP``, money and probabilities ``REAL`` / ``DOUBLE`` / ``DOUBLE PRECISION`` (rounded to cents
or thousandths at generation time), flags ``INTEGER`` 0/1.

:func:`generate` is a pure function of the seed (``random.Random(seed)``), so writers produce the same
rows in the same order for the same seed.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqltune.errors import ConfigError, SQLError
from sqltune.sql import postgres, schema

DIALECTS = ("sqlite", "duckdb", "postgres")

# logical type -> per-dialect physical type
_TYPES: dict[str, dict[str, str]] = {
    "int": {"sqlite": "INTEGER", "duckdb": "INTEGER", "postgres": "INTEGER"},
    "text": {"sqlite": "TEXT", "duckdb": "VARCHAR", "postgres": "TEXT"},
    "real": {"sqlite": "REAL", "duckdb": "DOUBLE", "postgres": "DOUBLE PRECISION"},
    "date": {"sqlite": "TEXT", "duckdb": "DATE", "postgres": "DATE"},
    "timestamp": {"sqlite": "TEXT", "duckdb": "TIMESTAMP", "postgres": "TIMESTAMP"},
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # logical: int, text, real, date, timestamp
    nullable: bool = False
    pk: bool = False
    references: str | None = None  # "table(column)"


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


C = Column
TABLES: tuple[Table, ...] = (
    Table("customers", (
        C("customer_id", "int", pk=True), C("name", "text"), C("email", "text", nullable=True),
        C("phone", "text", nullable=True), C("country", "text"), C("city", "text"), C("segment", "text"),
        C("signup_date", "date"),
    )),
    Table("products", (
        C("product_id", "int", pk=True), C("name", "text"), C("category", "text"), C("price", "real"),
        C("cost", "real"), C("launch_date", "date"),
    )),
    Table("orders", (
        C("order_id", "int", pk=True), C("customer_id", "int", references="customers(customer_id)"),
        C("order_date", "date"), C("status", "text"), C("channel", "text"), C("total_amount", "real"),
    )),
    Table("order_items", (
        C("order_item_id", "int", pk=True), C("order_id", "int", references="orders(order_id)"),
        C("product_id", "int", references="products(product_id)"), C("quantity", "int"),
        C("unit_price", "real"), C("discount", "real"),
    )),
    Table("subscriptions", (
        C("subscription_id", "int", pk=True), C("customer_id", "int", references="customers(customer_id)"),
        C("plan", "text"), C("billing_cycle", "text"), C("status", "text"), C("start_date", "date"),
        C("end_date", "date", nullable=True), C("mrr", "real"),
    )),
    Table("churn_predictions", (
        C("prediction_id", "int", pk=True), C("customer_id", "int", references="customers(customer_id)"),
        C("model_version", "text"), C("churn_probability", "real"), C("predicted_label", "int"),
        C("actual_label", "int", nullable=True), C("scored_at", "timestamp"),
    )),
    Table("forecast_predictions", (
        C("forecast_id", "int", pk=True), C("model_version", "text"), C("category", "text"),
        C("product_id", "int", nullable=True, references="products(product_id)"), C("forecast_date", "date"),
        C("predicted_units", "real"), C("predicted_revenue", "real"), C("lower_bound", "real", nullable=True),
        C("upper_bound", "real", nullable=True),
    )),
)
del C
TABLE_NAMES = tuple(t.name for t in TABLES)
_BY_NAME = {t.name: t for t in TABLES}


def _check_dialect(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise SQLError(f"unknown dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")


def schema_table(name: str, dialect: str = "sqlite") -> schema.Table:
    """One warehouse table in the schema model of :mod:`sqltune.sql.schema` (types of ``dialect``)."""
    _check_dialect(dialect)
    table = _BY_NAME[name]
    return schema.Table(
        name=name,
        columns=[schema.Column(c.name, _TYPES[c.type][dialect], not c.nullable) for c in table.columns],
        primary_key=[c.name for c in table.columns if c.pk],
    )


def table_ddl(name: str, dialect: str = "sqlite", *, compact: bool = False) -> str:
    """CREATE TABLE text of one table; ``compact`` gives the one-line prompt form (no NOT NULL/FKs).

    The compact form is the schema model's ``compact`` style, so prompts built from this text and from
    ``ddl_from_database(style="compact")`` of the built warehouse are identical. The full form is the
    warehouse's creation DDL, with its constraints inline.
    """
    if compact:
        return schema_table(name, dialect).render("compact")
    _check_dialect(dialect)
    parts = []
    for col in _BY_NAME[name].columns:
        text = f"{schema.quote_ident(col.name)} {_TYPES[col.type][dialect]}"
        if col.pk:
            text += " PRIMARY KEY"
        else:
            if not col.nullable:
                text += " NOT NULL"
            if col.references:
                text += f" REFERENCES {col.references}"
        parts.append(text)
    body = ",\n  ".join(parts)
    return f"CREATE TABLE {name} (\n  {body}\n);"


def full_schema_ddl(dialect: str = "sqlite") -> str:
    """The full DDL of the warehouse in ``dialect`` (sqlite, duckdb or postgres)."""
    return "\n\n".join(table_ddl(t.name, dialect) for t in TABLES) + "\n"


def compact_schema(tables: list[str] | tuple[str, ...], dialect: str = "sqlite") -> str:
    """Prompt schema: one compact CREATE TABLE line per table, in canonical table order."""
    wanted = set(tables)
    return "\n".join(table_ddl(t, dialect, compact=True) for t in TABLE_NAMES if t in wanted)


# --------------------------------------------------------------------------------------------- data

COUNTRIES: dict[str, tuple[str, ...]] = {
    "United States": ("New York", "Chicago", "Seattle", "Austin"),
    "Germany": ("Berlin", "Munich", "Hamburg"),
    "United Kingdom": ("London", "Manchester", "Leeds"),
    "France": ("Paris", "Lyon", "Marseille"),
    "Canada": ("Toronto", "Vancouver", "Montreal"),
    "Spain": ("Madrid", "Barcelona", "Valencia"),
    "Italy": ("Rome", "Milan", "Turin"),
    "Netherlands": ("Amsterdam", "Rotterdam", "Utrecht"),
    "Brazil": ("Sao Paulo", "Rio de Janeiro"),
    "Japan": ("Tokyo", "Osaka"),
    "India": ("Mumbai", "Bangalore", "Delhi"),
    "Australia": ("Sydney", "Melbourne"),
    "Sweden": ("Stockholm", "Gothenburg"),
    "Poland": ("Warsaw", "Krakow"),
    "Mexico": ("Mexico City", "Guadalajara"),
}
_COUNTRY_WEIGHTS = (18, 10, 10, 8, 7, 6, 6, 5, 5, 5, 5, 4, 3, 3, 3)
_PHONE_PREFIX = {
    "United States": "+1", "Germany": "+49", "United Kingdom": "+44", "France": "+33", "Canada": "+1",
    "Spain": "+34", "Italy": "+39", "Netherlands": "+31", "Brazil": "+55", "Japan": "+81", "India": "+91",
    "Australia": "+61", "Sweden": "+46", "Poland": "+48", "Mexico": "+52",
}
SEGMENTS = ("Consumer", "SMB", "Enterprise")
FIRST_NAMES = (
    "Anna", "Ben", "Carla", "David", "Elena", "Felix", "Grace", "Hugo", "Ines", "Jonas", "Karin", "Liam",
    "Maria", "Noah", "Olivia", "Pablo", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "William", "Xenia",
    "Yusuf", "Zoe", "Aisha", "Bruno", "Chloe", "Diego", "Emma", "Farid", "Greta", "Hannah", "Ivan", "Julia",
    "Kenji", "Lucia", "Marco", "Nina", "Oscar", "Priya", "Rafael", "Sofia", "Tomas", "Uma", "Victor", "Wen",
    "Yara", "Zara", "Alice", "Daniel", "Laura", "Martin", "Sarah", "Lukas", "Mia", "Leo", "Eva", "Adam",
)
LAST_NAMES = (
    "Schmidt", "Smith", "Garcia", "Rossi", "Dubois", "Jansen", "Silva", "Tanaka", "Sharma", "Nowak",
    "Andersson", "Lopez", "Brown", "Muller", "Martin", "Bianchi", "Bakker", "Santos", "Sato", "Patel",
    "Kowalski", "Johansson", "Hernandez", "Wilson", "Fischer", "Bernard", "Romano", "Visser", "Costa",
    "Suzuki", "Gupta", "Wojcik", "Nilsson", "Martinez", "Taylor", "Weber", "Moreau", "Ricci", "Smit",
    "Oliveira", "Kim", "Chen", "Nguyen", "Kumar", "Lewis", "Walker", "Young", "King", "Wright", "Scott",
)
CATEGORIES: dict[str, tuple[tuple[str, float, float], ...]] = {
    # category -> (product name, low price, high price)
    "Electronics": (
        ("Wireless Mouse", 15, 40), ("USB-C Hub", 25, 60), ("Noise Cancelling Headphones", 120, 300),
        ("Smart Watch", 150, 350), ("Bluetooth Speaker", 40, 120), ("4K Monitor", 250, 500),
        ("Mechanical Keyboard", 60, 150), ("HD Webcam", 30, 90),
    ),
    "Books": (
        ("SQL Cookbook", 25, 50), ("Data Science Handbook", 30, 60), ("Mystery Novel", 8, 20),
        ("Cooking Basics", 15, 35), ("World Atlas", 20, 45), ("Poetry Collection", 10, 25),
        ("History of Rome", 18, 40), ("Kids Picture Book", 6, 15),
    ),
    "Clothing": (
        ("Rain Jacket", 60, 140), ("Running Shoes", 70, 160), ("Wool Sweater", 40, 100),
        ("Denim Jeans", 35, 90), ("Cotton T-Shirt", 10, 25), ("Winter Boots", 80, 180),
        ("Baseball Cap", 12, 30), ("Silk Scarf", 25, 70),
    ),
    "Home": (
        ("Coffee Maker", 50, 150), ("Desk Lamp", 20, 60), ("Throw Pillow", 12, 35),
        ("Chef Knife", 30, 110), ("Air Purifier", 100, 250), ("Bath Towel Set", 20, 55),
        ("Cast Iron Pan", 25, 70), ("Wall Clock", 15, 45),
    ),
    "Sports": (
        ("Yoga Mat", 20, 60), ("Dumbbell Set", 40, 120), ("Tennis Racket", 50, 180),
        ("Cycling Helmet", 40, 110), ("Water Bottle", 8, 25), ("Camping Tent", 90, 300),
        ("Jump Rope", 6, 18),
    ),
    "Beauty": (
        ("Face Cream", 15, 60), ("Shampoo", 6, 20), ("Perfume", 40, 130), ("Lip Balm", 3, 10),
        ("Hair Dryer", 30, 110), ("Sunscreen", 8, 25),
    ),
    "Toys": (
        ("Building Blocks", 20, 80), ("Puzzle 1000 Pieces", 12, 30), ("Board Game", 20, 60),
        ("Remote Control Car", 30, 90), ("Plush Bear", 10, 30), ("Science Kit", 25, 70),
    ),
    "Garden": (
        ("Garden Hose", 20, 60), ("Pruning Shears", 12, 40), ("Flower Seeds", 3, 10),
        ("Lawn Mower", 150, 400), ("Watering Can", 10, 30), ("Patio Chair", 40, 120),
    ),
}
ORDER_STATUSES = ("completed", "shipped", "pending", "cancelled", "returned")
CHANNELS = ("web", "mobile", "store")
PLANS: dict[str, float] = {"Basic": 9.99, "Standard": 19.99, "Premium": 49.99, "Enterprise": 199.0}
BILLING_CYCLES = ("monthly", "annual")
SUB_STATUSES = ("active", "cancelled", "paused")
CHURN_MODELS: dict[str, str] = {"churn-v1.0": "2024-03-31", "churn-v1.1": "2024-07-01", "churn-v2.0": "2024-11-15"}
FORECAST_MODELS = ("prophet-v3", "arima-v1")
FORECAST_DATES = tuple(f"2025-{m:02d}-01" for m in range(1, 7))

ORDER_START = dt.date(2023, 1, 1)
ORDER_END = dt.date(2024, 12, 31)
SNAPSHOT = dt.date(2025, 1, 1)


@dataclass
class Warehouse:
    """Rows of every table (tuples in column order) plus the seed they came from."""

    seed: int
    rows: dict[str, list[tuple[Any, ...]]]

    def counts(self) -> dict[str, int]:
        return {name: len(self.rows[name]) for name in TABLE_NAMES}


def _day(rng: random.Random, lo: dt.date, hi: dt.date) -> dt.date:
    return lo + dt.timedelta(days=rng.randint(0, (hi - lo).days))


def generate(seed: int = 0, *, n_customers: int = 400, n_orders: int = 2500) -> Warehouse:
    """Generate the warehouse rows deterministically from ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    if n_customers < 50 or n_orders < 100:
        raise ConfigError(f"n_customers (got {n_customers}) must be >= 50 and n_orders (got {n_orders}) >= 100")
    rng = random.Random(seed)
    iso = dt.date.isoformat

    # customers
    names = [f"{f} {l}" for f in FIRST_NAMES for l in LAST_NAMES]
    rng.shuffle(names)
    country_list = list(COUNTRIES)
    customers = []
    cust_info = {}
    for cid in range(1, n_customers + 1):
        name = names[cid - 1]
        country = rng.choices(country_list, weights=_COUNTRY_WEIGHTS)[0]
        city = rng.choice(COUNTRIES[country])
        segment = rng.choices(SEGMENTS, weights=(60, 28, 12))[0]
        signup = _day(rng, dt.date(2022, 1, 1), dt.date(2024, 10, 31))
        first, last = name.lower().split(" ")
        email = None if rng.random() < 0.08 else f"{first}.{last}{cid}@example.com"
        phone = None if rng.random() < 0.15 else f"{_PHONE_PREFIX[country]} {rng.randint(200, 999)} {rng.randint(1000000, 9999999)}"
        customers.append((cid, name, email, phone, country, city, segment, iso(signup)))
        cust_info[cid] = {"signup": signup, "segment": segment, "activity": rng.lognormvariate(0, 0.8)}

    # products
    products = []
    price_of = {}
    launch_of = {}
    pid = 0
    for category, items in CATEGORIES.items():
        for pname, lo, hi in items:
            pid += 1
            # multiples of 0.20 keep every discounted line amount (5% steps) a whole number of cents, so
            # sums never sit on a half-cent and ROUND(..., 2) agrees across engines
            price = round(round(rng.uniform(lo, hi) / 0.2) * 0.2, 2)
            cost = round(price * rng.uniform(0.4, 0.7), 2)
            r = rng.random()
            if r < 0.7:
                launch = _day(rng, dt.date(2021, 1, 1), dt.date(2022, 12, 31))
            elif r < 0.95:
                launch = _day(rng, dt.date(2023, 1, 1), dt.date(2024, 9, 30))
            else:
                launch = _day(rng, dt.date(2024, 12, 20), dt.date(2024, 12, 31))  # never ordered
            products.append((pid, pname, category, price, cost, iso(launch)))
            price_of[pid] = price
            launch_of[pid] = launch

    # orders and items
    cids = list(cust_info)
    weights = [cust_info[c]["activity"] * (1.8 if cust_info[c]["segment"] == "Enterprise" else 1.0) for c in cids]
    drafts = []
    while len(drafts) < n_orders:
        cid = rng.choices(cids, weights=weights)[0]
        start = max(cust_info[cid]["signup"], ORDER_START)
        day = _day(rng, start, ORDER_END)
        # seasonality: November/December busier, summer a little quieter
        accept = {11: 1.0, 12: 1.0, 6: 0.6, 7: 0.55, 8: 0.6}.get(day.month, 0.75)
        if rng.random() > accept:
            continue
        drafts.append((day, cid, rng.random(), rng.random()))
    drafts.sort(key=lambda d: (d[0], d[1], d[2]))
    orders, items = [], []
    item_id = 0
    for oid, (day, cid, r_status, r_channel) in enumerate(drafts, start=1):
        recent = (ORDER_END - day).days < 14
        if recent:
            status = "pending" if r_status < 0.35 else "shipped" if r_status < 0.85 else "completed"
        else:
            status = ("completed" if r_status < 0.82 else "cancelled" if r_status < 0.91
                      else "returned" if r_status < 0.97 else "shipped")
        channel = "web" if r_channel < 0.5 else "mobile" if r_channel < 0.85 else "store"
        available = [p for p in price_of if launch_of[p] <= day]
        chosen = rng.sample(available, k=rng.choices((1, 2, 3, 4), weights=(45, 30, 15, 10))[0])
        total = 0.0
        for p in sorted(chosen):
            item_id += 1
            qty = rng.choices((1, 2, 3, 4, 5), weights=(55, 25, 10, 6, 4))[0]
            disc = rng.choice((0.0, 0.0, 0.0, 0.0, 0.05, 0.1, 0.15, 0.2))
            items.append((item_id, oid, p, qty, price_of[p], disc))
            total += round(qty * price_of[p] * (1 - disc), 2)
        orders.append((oid, cid, iso(day), status, channel, round(total, 2)))

    # subscriptions
    subs = []
    sid = 0
    active_sub = set()
    for cid in cids:
        if rng.random() > 0.55:
            continue
        signup = cust_info[cid]["signup"]
        start = _day(rng, signup, min(signup + dt.timedelta(days=400), dt.date(2024, 12, 15)))
        n_subs = 2 if rng.random() < 0.15 else 1
        plan_names = list(PLANS)
        for k in range(n_subs):
            seg = cust_info[cid]["segment"]
            plan_w = {"Consumer": (50, 35, 14, 1), "SMB": (20, 40, 30, 10), "Enterprise": (5, 15, 40, 40)}[seg]
            plan = rng.choices(plan_names, weights=plan_w)[0]
            cycle = "annual" if rng.random() < 0.3 else "monthly"
            mrr = round(PLANS[plan] * (0.85 if cycle == "annual" else 1.0), 2)
            last = k == n_subs - 1
            r = rng.random()
            if not last or r < 0.3:
                status = "cancelled"
                end = start + dt.timedelta(days=rng.randint(30, 500))
                if end >= SNAPSHOT:
                    end = _day(rng, start + dt.timedelta(days=1), dt.date(2024, 12, 31)) if start < dt.date(2024, 12, 30) else None
                    if end is None:
                        status = "active"
            else:
                status = "paused" if r > 0.92 else "active"
                end = None
            sid += 1
            subs.append((sid, cid, plan, cycle, status, iso(start), iso(end) if end else None, mrr))
            if status == "active":
                active_sub.add(cid)
            if end is None or end >= dt.date(2024, 12, 1):
                break
            start = end + dt.timedelta(days=rng.randint(1, 60))

    # churn predictions
    last_order: dict[int, dt.date] = {}
    n_orders_of: dict[int, int] = {}
    for _, cid, day, *_ in orders:
        d = dt.date.fromisoformat(day)
        last_order[cid] = max(last_order.get(cid, d), d)
        n_orders_of[cid] = n_orders_of.get(cid, 0) + 1
    preds = []
    prid = 0
    for mv, scored in CHURN_MODELS.items():
        scored_day = dt.date.fromisoformat(scored)
        skill = {"churn-v1.0": 0.55, "churn-v1.1": 0.7, "churn-v2.0": 0.8}[mv]
        for cid in cids:
            if cust_info[cid]["signup"] > scored_day or rng.random() < 0.08:
                continue
            risk = 0.35 + (0.0 if cid in active_sub else 0.2) - min(n_orders_of.get(cid, 0), 10) * 0.03
            lo = last_order.get(cid)
            if lo is None or (scored_day - lo).days > 180:
                risk += 0.2
            truth = 1 if rng.random() < max(0.02, min(0.95, risk)) else 0
            signal = truth * skill + (1 - skill) * rng.random() + rng.gauss(0, 0.12)
            prob = round(min(0.99, max(0.01, 0.15 + 0.7 * signal)), 3)
            label = 1 if prob >= 0.5 else 0
            if mv == "churn-v2.0":
                actual = truth if rng.random() < 0.4 else None
            else:
                actual = truth if rng.random() < 0.95 else None
            secs = rng.randint(0, 6 * 3600)
            ts = dt.datetime.combine(scored_day, dt.time(2, 0)) + dt.timedelta(seconds=secs)
            prid += 1
            preds.append((prid, cid, mv, prob, label, actual, ts.strftime("%Y-%m-%d %H:%M:%S")))

    # forecasts: category level (product_id NULL) for both models, product level for prophet-v3
    units_2024: dict[int, int] = {}
    order_day = {o[0]: o[2] for o in orders}
    for _, oid, p, qty, _, _ in items:
        if order_day[oid].startswith("2024"):
            units_2024[p] = units_2024.get(p, 0) + qty
    cat_of = {p[0]: p[2] for p in products}
    season = {1: 0.85, 2: 0.8, 3: 0.95, 4: 1.0, 5: 1.05, 6: 0.9}
    forecasts = []
    fid = 0
    for mv in FORECAST_MODELS:
        for category in CATEGORIES:
            pids = [p for p in cat_of if cat_of[p] == category]
            base_units = sum(units_2024.get(p, 0) for p in pids) / 12.0
            avg_price = sum(price_of[p] for p in pids) / len(pids)
            for month, fdate in enumerate(FORECAST_DATES, start=1):
                units = round(max(1.0, base_units * season[month] * rng.uniform(0.85, 1.15)), 1)
                revenue = round(units * avg_price * 0.9, 2)
                if mv == "arima-v1" and month >= 5:
                    lower = upper = None
                else:
                    lower = round(revenue * rng.uniform(0.75, 0.9), 2)
                    upper = round(revenue * rng.uniform(1.1, 1.25), 2)
                fid += 1
                forecasts.append((fid, mv, category, None, fdate, units, revenue, lower, upper))
    top = sorted(units_2024, key=lambda p: (-units_2024[p], p))[:24]
    for p in sorted(top):
        for month, fdate in enumerate(FORECAST_DATES, start=1):
            units = round(max(1.0, units_2024[p] / 12.0 * season[month] * rng.uniform(0.8, 1.2)), 1)
            revenue = round(units * price_of[p] * 0.9, 2)
            lower = round(revenue * rng.uniform(0.7, 0.9), 2)
            upper = round(revenue * rng.uniform(1.1, 1.3), 2)
            fid += 1
            forecasts.append((fid, "prophet-v3", cat_of[p], p, fdate, units, revenue, lower, upper))

    rows = {
        "customers": customers, "products": products, "orders": orders, "order_items": items,
        "subscriptions": subs, "churn_predictions": preds, "forecast_predictions": forecasts,
    }
    return Warehouse(seed=seed, rows=rows)


# ------------------------------------------------------------------------------------------ writers

def _convert(table: Table, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Python values for typed engines: date/timestamp text -> date/datetime objects."""
    out = []
    for col, value in zip(table.columns, row):
        if value is not None and col.type == "date":
            value = dt.date.fromisoformat(value)
        elif value is not None and col.type == "timestamp":
            value = dt.datetime.fromisoformat(value)
        out.append(value)
    return tuple(out)


def fill_sqlite(conn: sqlite3.Connection, wh: Warehouse) -> None:
    for table in TABLES:
        conn.execute(table_ddl(table.name, "sqlite"))
        marks = ", ".join("?" * len(table.columns))
        conn.executemany(f"INSERT INTO {table.name} VALUES ({marks})", wh.rows[table.name])
    conn.commit()


def write_sqlite(path: str | Path, wh: Warehouse | None = None, *, seed: int = 0) -> Path:
    """Write the warehouse to a fresh SQLite file (replacing one that exists)."""
    wh = wh or generate(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    conn = sqlite3.connect(path)
    try:
        fill_sqlite(conn, wh)
    finally:
        conn.close()
    return path


def memory_sqlite(wh: Warehouse) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    fill_sqlite(conn, wh)
    return conn


def fill_duckdb(conn: Any, wh: Warehouse) -> None:
    for table in TABLES:
        conn.execute(table_ddl(table.name, "duckdb"))
        rows = [_convert(table, r) for r in wh.rows[table.name]]
        one = "(" + ", ".join("?" * len(table.columns)) + ")"
        chunk = 400
        for i in range(0, len(rows), chunk):
            part = rows[i:i + chunk]
            params = [v for r in part for v in r]
            conn.execute(f"INSERT INTO {table.name} VALUES " + ", ".join([one] * len(part)), params)


def write_duckdb(path: str | Path, wh: Warehouse | None = None, *, seed: int = 0) -> Path:
    """Write the warehouse to a fresh DuckDB file (replacing one that exists)."""
    import duckdb

    wh = wh or generate(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, Path(str(path) + ".wal")):
        if p.exists():
            p.unlink()
    conn = duckdb.connect(str(path))
    try:
        fill_duckdb(conn, wh)
        conn.execute("CHECKPOINT")
    finally:
        conn.close()
    return path


def load_postgres(admin_dsn: str, dbname: str = "sqltune_warehouse", wh: Warehouse | None = None, *,
                  seed: int = 0, replace: bool = True) -> str:
    """Create ``dbname`` on the server of ``admin_dsn`` if needed, (re)create the tables and COPY the rows.

    Returns the DSN of the loaded database.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", dbname):
        raise ConfigError(f"postgres database name {dbname!r} is invalid; use letters, digits and _ (max 63)")
    wh = wh or generate(seed)
    dsn = postgres.create_database(admin_dsn, dbname)
    with postgres.connect(dsn) as conn:
        with conn.cursor() as cur:
            if replace:
                for table in reversed(TABLES):
                    cur.execute(f"DROP TABLE IF EXISTS {table.name} CASCADE")
            for table in TABLES:
                cur.execute(table_ddl(table.name, "postgres"))
                cols = ", ".join(table.column_names)
                with cur.copy(f"COPY {table.name} ({cols}) FROM STDIN") as copy:
                    for row in wh.rows[table.name]:
                        copy.write_row(_convert(table, row))
            cur.execute("ANALYZE")
        conn.commit()
    return dsn
