"""Per-query overhead of killable execution (sqltune.sql.isolated.SandboxPool) against in-process execution.

The same read-only queries run on a small SQLite database (the embedded warehouse's shape is not needed: the
overhead is the pipe round trip and pickling, not the query) three ways: in this process, through a pool of
one worker (sequential), and through a pool of ``--workers`` workers from as many threads (batch evaluation).
Prints the mean per-query time of each and the pool's added overhead, and writes them as JSON.

    python benchmarks/bench_sandbox_pool.py --queries 2000 --workers 2 --out benchmarks/results/sandbox-pool.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))

from sqltune.sql import execute  # noqa: E402
from sqltune.sql.isolated import SandboxPool  # noqa: E402

QUERIES = [
    "SELECT count(*) FROM orders",
    "SELECT name, country FROM customers WHERE country = 'Germany' ORDER BY name",
    "SELECT c.name, sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.customer_id GROUP BY c.name",
    "SELECT status, count(*) FROM orders GROUP BY status HAVING count(*) > 1",
]


def _database(folder: str) -> str:
    path = os.path.join(folder, "bench.sqlite")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT)")
        conn.execute("CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER, total REAL, status TEXT)")
        conn.executemany("INSERT INTO customers VALUES (?, ?, ?)",
                         [(i, f"c{i}", ("Germany", "France", "Poland")[i % 3]) for i in range(200)])
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                         [(i, i % 200, i * 1.5, ("shipped", "pending")[i % 2]) for i in range(2000)])
    return path


def _timed(fn, n: int) -> float:
    start = time.perf_counter()
    fn(n)
    return (time.perf_counter() - start) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = _database(tmp)

        def in_process(n: int) -> None:
            for i in range(n):
                assert execute(QUERIES[i % len(QUERIES)], db=db, timeout_s=5).ok

        with SandboxPool(workers=1) as one, SandboxPool(workers=args.workers) as many:
            for p in (one, many):  # workers started and warm before timing
                for i in range(8):
                    execute(QUERIES[i % len(QUERIES)], db=db, timeout_s=30, pool=p)

            def pooled(n: int) -> None:
                for i in range(n):
                    assert execute(QUERIES[i % len(QUERIES)], db=db, timeout_s=5, pool=one).ok

            def pooled_threads(n: int) -> None:
                with ThreadPoolExecutor(args.workers) as ex:
                    list(ex.map(lambda i: execute(QUERIES[i % len(QUERIES)], db=db, timeout_s=5, pool=many),
                                range(n)))

            in_proc_s = _timed(in_process, args.queries)
            pool_s = _timed(pooled, args.queries)
            threads_s = _timed(pooled_threads, args.queries)
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs".strip(),
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "queries": args.queries, "workers": args.workers,
        "in_process_ms_per_query": 1000 * in_proc_s,
        "pool_1_worker_ms_per_query": 1000 * pool_s,
        "pool_overhead_ms_per_query": 1000 * (pool_s - in_proc_s),
        f"pool_{args.workers}_workers_{args.workers}_threads_ms_per_query": 1000 * threads_s,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
