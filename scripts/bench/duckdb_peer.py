"""The DuckDB peer of `rainbow bench warehouse` (issue 17).

Builds the same compiled SQL project Rainbow builds — `target/manifest.json` and the compiled
data tests under `target/compiled/` from `rainbow compile` — with DuckDB over the same Parquet
files of the master dataset, as dbt-duckdb would: every model transpiled from BigQuery SQL to
DuckDB SQL by sqlglot (`read="bigquery", write="duckdb"`), built in DAG order (views as views;
tables and incrementals — the first build — as tables), then every data test run as a count
query. Raw tables are views over `read_parquet(<lake>/raw/<table>/**/*.parquet,
hive_partitioning = true)`.

Prints one JSON line: wall seconds of the build and of the tests (transpiling excluded), the
thread count, and a few results for the caller to compare with its own (total sales units and
amount, the payment distribution).

Usage: python duckdb_peer.py --target DIR --lake DIR --db FILE [--threads N]
Needs `duckdb` and `sqlglot==30.30.0` (scripts/lib/dbt.sh installs them into the test peers' venv).
"""

import argparse
import json
import os
import pathlib
import sys
import time

import duckdb
import sqlglot


def topo_order(nodes):
    """Models in an order where every model follows the models it refs."""
    by_name = {n["name"]: n for n in nodes}
    order, state = [], {}

    def visit(name):
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise SystemExit(f"cycle through model {name}")
        state[name] = "visiting"
        for r in by_name[name].get("refs", []):
            if r in by_name:
                visit(r)
        state[name] = "done"
        order.append(by_name[name])

    for n in nodes:
        visit(n["name"])
    return order


def transpile(sql, where):
    try:
        out = sqlglot.transpile(sql, read="bigquery", write="duckdb")
    except sqlglot.errors.ParseError as e:
        raise SystemExit(f"{where}: sqlglot could not parse the compiled SQL: {e}")
    return ";\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True, help="the project's target/ directory")
    ap.add_argument("--lake", required=True, help="the lake directory holding raw/<table>/")
    ap.add_argument("--db", required=True, help="the DuckDB database file (created)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    target = pathlib.Path(args.target)
    manifest = json.loads((target / "manifest.json").read_text())
    project = manifest["project"]
    models = [n for n in manifest["nodes"] if n["kind"] == "model"]
    model_paths = {n["path"] for n in manifest["nodes"]}
    compiled = target / "compiled" / project
    tests = sorted(
        p
        for p in compiled.rglob("*.sql")
        if str(p.relative_to(compiled)) not in model_paths
    )
    # Singular tests are manifest nodes too; their compiled files are tests, not models.
    tests += sorted(
        compiled / n["path"] for n in manifest["nodes"] if n["kind"] == "test"
    )

    # Transpiling is sqlglot's work, not the warehouse's: done before the clock starts.
    ddl = []
    for n in topo_order(models):
        mat = n["config"].get("materialized", "view")
        if mat == "ephemeral":
            raise SystemExit(f"{n['path']}: ephemeral models are not supported by the peer")
        kind = "VIEW" if mat == "view" else "TABLE"
        body = transpile(n["compiled"], n["path"])
        ddl.append((n["path"], f"CREATE OR REPLACE {kind} {n['schema']}.{n['relation']} AS {body}"))
    test_sql = [
        (str(p), f"SELECT COUNT(*) FROM ({transpile(p.read_text(), str(p))}) AS t") for p in tests
    ]

    if os.path.exists(args.db):
        os.remove(args.db)
    con = duckdb.connect(args.db)
    con.execute(f"SET threads = {args.threads}")
    t0 = time.perf_counter()
    schemas = {n["schema"] for n in models} | {"raw"}
    for s in sorted(schemas):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
    raw = pathlib.Path(args.lake) / "raw"
    for table in sorted(p.name for p in raw.iterdir() if p.is_dir()):
        glob = str(raw / table / "**" / "*.parquet")
        con.execute(
            f"CREATE OR REPLACE VIEW raw.{table} AS SELECT * FROM "
            f"read_parquet('{glob}', hive_partitioning = true)"
        )
    for where, sql in ddl:
        try:
            con.execute(sql)
        except duckdb.Error as e:
            raise SystemExit(f"{where}: DuckDB refused the transpiled model: {e}")
    t1 = time.perf_counter()
    failures = {}
    for where, sql in test_sql:
        try:
            (count,) = con.execute(sql).fetchone()
        except duckdb.Error as e:
            raise SystemExit(f"{where}: DuckDB refused the transpiled test: {e}")
        if count:
            failures[where] = count
    t2 = time.perf_counter()

    total = con.execute(
        "SELECT SUM(sales_quantity), CAST(SUM(extended_sales_amount) AS VARCHAR) "
        "FROM main_warehouse.fact_sales"
    ).fetchone()
    rows = {}
    for n in models:
        (rows[f"{n['schema']}.{n['relation']}"],) = con.execute(
            f"SELECT COUNT(*) FROM {n['schema']}.{n['relation']}"
        ).fetchone()
    print(
        json.dumps(
            {
                "engine": f"duckdb {duckdb.__version__}",
                "threads": args.threads,
                "models": len(models),
                "tests": len(test_sql),
                "build_s": round(t1 - t0, 4),
                "tests_s": round(t2 - t1, 4),
                "wall_s": round(t2 - t0, 4),
                "failed_tests": failures,
                "total_units": int(total[0]),
                "total_amount": total[1],
                "rows": rows,
            }
        )
    )
    con.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
