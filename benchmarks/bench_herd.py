"""The thundering herd and the accept lock at class sizes, with the course's claims checked.

    .venv/bin/python benchmarks/bench_herd.py [--repeats N] [--workers 4] [--connections 2000]

Checks (each repeat): blocking accept() wakes ≤ 1.2 workers per connection (voluntary context
switches); select() wakes ≥ 0.8 × workers; SO_REUSEPORT splits within ±20% of even. Then prints
the accept-lock table, with and without the lock. Exits 1 if a check failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netlab.experiments import acceptlock, herd  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--connections", type=int, default=2000)
    args = p.parse_args(argv)
    n, failures = args.workers, []
    checks = {"accept": ("ctx_per_conn", lambda v: v <= 1.2, "≤ 1.2 ctx-sw/conn"),
              "select": ("ctx_per_conn", lambda v: v >= 0.8 * n, f"≥ {0.8 * n:g} ctx-sw/conn"),
              "reuseport": ("even", bool, "every worker within ±20% of even")}
    print(f"thundering herd: {n} workers, {args.connections} connections, "
          f"{args.repeats} repeat(s)")
    t0 = time.perf_counter()
    for rep in range(args.repeats):
        table = herd.run_all(workers=n, connections=args.connections)
        cols = ["mode", "ctx_per_conn", "invol_per_conn", "eagain", "split", "even", "seconds"]
        print(f"\nrepeat {rep + 1}\n" + table[cols].to_string(index=False, float_format="{:.2f}"
                                                             .format))
        for _, row in table[table["available"]].iterrows():
            if row["mode"] in checks:
                col, ok, claim = checks[row["mode"]]
                if not ok(row[col]):
                    failures.append(f"repeat {rep + 1}: {row['mode']} {col}={row[col]} "
                                    f"(claim: {claim})")
    print(f"\nherd took {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    print("\naccept lock (class sizes, with and without the lock)")
    print(acceptlock.table(acceptlock.run(lock=(True, False))))
    print(f"accept lock took {time.perf_counter() - t0:.1f} s")
    for f in failures:
        print(f"FAILED {f}")
    print("all herd checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
