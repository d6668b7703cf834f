//! The Rainbow SQL project on the embedded warehouse gives DuckDB's results: `rainbow bench
//! warehouse` on a small history builds the compiled project with both engines (DuckDB from
//! PyPI, the models transpiled by sqlglot; `RAINBOW_BENCH_PYTHON`, installed by
//! scripts/test.sh) and fails unless every model's row count and the fact table's totals are
//! equal and every data test passes on both. The timings it prints are not asserted.

use std::process::Command;

const RAINBOW: &str = env!("CARGO_BIN_EXE_rainbow");

#[test]
fn sql_project_builds_like_duckdb() {
    let python = std::env::var("RAINBOW_BENCH_PYTHON").unwrap_or_else(|_| {
        panic!(
            "RAINBOW_BENCH_PYTHON is not set: run the suite with scripts/test.sh, which installs \
             duckdb and sqlglot from PyPI into a venv (the peer this test compares with)"
        )
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(RAINBOW)
        .args([
            "bench",
            "warehouse",
            "--days",
            "4",
            "--orders-per-day",
            "40",
        ])
        .args(["--runs", "1", "--duckdb-threads", "2", "--bench-home"])
        .arg(dir.path().join("home"))
        .env("RAINBOW_BENCH_PYTHON", &python)
        .env("TMPDIR", dir.path())
        .output()
        .expect("run rainbow");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    let line = stdout.lines().last().expect("a JSON line");
    let report: serde_json::Value = serde_json::from_str(line).expect("JSON");
    assert_eq!(report["models"], 24, "{report}");
    assert_eq!(report["tests"], 43, "{report}");
    assert!(
        report["total_units"].as_i64().is_some_and(|u| u > 0),
        "{report}"
    );
    assert!(
        report["ratio"].as_f64().is_some_and(f64::is_finite),
        "{report}"
    );
    // Both processes' memory was sampled, and private memory is part of resident memory.
    for engine in ["rainbow", "duckdb"] {
        let rss = report[format!("{engine}_peak_rss_mib")].as_u64();
        let private = report[format!("{engine}_peak_private_mib")].as_u64();
        assert!(
            rss.zip(private).is_some_and(|(r, p)| p > 0 && p <= r),
            "{engine}: {report}"
        );
    }
}
