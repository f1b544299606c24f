#!/usr/bin/env python3
"""Times the TSBS queries of a directory in DuckDB over one Parquet file.

    python3 benches/duckdb_tsbs.py FILE.parquet queries/tsbs RUNS

Prints one JSON object per query: {"query", "rows", "median_ms", "p95_ms"}. The table `cpu`
is a view over the file; Vigil's `date_bin(i, time)` becomes DuckDB's
`time_bucket(i, time::TIMESTAMPTZ)`. Each query
runs once to warm up, then RUNS times.
"""

import json
import re
import pathlib
import statistics
import sys
import time

import duckdb


def main():
    parquet, queries, runs = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE VIEW cpu AS SELECT * FROM read_parquet('{parquet}')")
    for path in sorted(queries.glob("*.sql")):
        sql = "\n".join(l for l in path.read_text().splitlines() if not l.startswith("--"))
        # Vigil stores nanoseconds; DuckDB's time_bucket takes microsecond timestamps,
        # so the bucketed value (only) is cast.
        sql = re.sub(r"date_bin\((INTERVAL '[^']*'), time\)", r"time_bucket(\1, time::TIMESTAMPTZ)",
                     sql.strip().rstrip(";"))
        rows = len(con.execute(sql).fetchall())
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            con.execute(sql).fetchall()
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        print(json.dumps({"query": path.stem, "rows": rows,
                          "median_ms": statistics.median(times), "p95_ms": p95}), flush=True)


if __name__ == "__main__":
    main()
