//! The `rainbow` binary as a user meets it: list, materialize, status, runs, run show, bad input.

use std::path::Path;
use std::process::{Command, Output};

const RAINBOW: &str = env!("CARGO_BIN_EXE_rainbow");

fn rainbow(dir: &Path, args: &[&str]) -> Output {
    Command::new(RAINBOW)
        .current_dir(dir)
        .env_remove("RAINBOW_DATABASE_URL")
        .env_remove("RAINBOW_HOME")
        .env("RAINBOW_RESOURCE__SHOP__CURRENCY", "EUR")
        .args(args)
        .output()
        .expect("run rainbow")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_new_user_lists_materializes_and_inspects() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();

    let out = rainbow(d, &["list", "--json", "--select", "+reports/summary"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let assets: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let keys: Vec<&str> = assets
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|a| a["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "shop/orders",
            "staging/orders",
            "marts/daily_revenue",
            "reports/summary"
        ]
    );
    assert_eq!(assets[2]["deps"], serde_json::json!(["staging/orders"]));
    assert_eq!(
        assets[2]["checks"],
        serde_json::json!(["revenue_non_negative"])
    );
    assert_eq!(assets[2]["staleness"], "missing");
    assert_eq!(assets[0]["staleness"], "source");

    let out = rainbow(d, &["materialize", "--select", "+reports/summary"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("SUCCESS: 4 succeeded, 0 failed, 0 skipped"),
        "{}",
        stdout(&out)
    );
    assert!(
        d.join(".rainbow/rainbow.db").exists(),
        "SQLite storage created under .rainbow/"
    );

    let out = rainbow(d, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let statuses: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let revenue = statuses
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["key"] == "marts/daily_revenue")
        .expect("listed");
    // Partitioned assets were not part of the run.
    let daily = statuses
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["key"] == "daily/orders")
        .expect("listed");
    assert_eq!(daily["staleness"], "missing");
    assert_eq!(revenue["staleness"], "fresh");
    // The resource came from the environment.
    assert_eq!(
        revenue["latest"]["materialization"]["metadata"]["currency"],
        serde_json::json!({"type": "text", "value": "EUR"})
    );

    let out = rainbow(d, &["runs", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let runs: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let run_id = runs[0]["run_id"].as_str().expect("id").to_owned();
    let out = rainbow(d, &["run", "show", &run_id]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("status    SUCCESS"), "{text}");
    assert!(
        text.contains("check `revenue_non_negative` passed (error, blocking)"),
        "{text}"
    );
    assert!(text.contains("info: kept 4 order lines"), "{text}");

    // The job resolves to the same selection.
    let out = rainbow(d, &["materialize", "--job", "daily"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn bad_input_gets_clear_errors_and_exit_code_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let cases: &[(&[&str], &str)] = &[
        (
            &["materialize", "--select", "marts/daily_revenu"],
            "unknown asset `marts/daily_revenu` (did you mean `marts/daily_revenue`?)",
        ),
        (
            &["materialize", "--select", "group:nope"],
            "no asset has group `nope`",
        ),
        (&["materialize"], "give --select SELECTION"),
        (
            &["materialize", "--select", "group:shop,group:marts"],
            "selects no assets once the exclusions are applied",
        ),
        (
            &["materialize", "--job", "daily", "--exclude", "shop/orders"],
            "cannot be used with",
        ),
        (
            &["--config", "nope.toml", "materialize", "--select", "*"],
            "nope.toml: the config file does not exist",
        ),
        (
            &["materialize", "--job", "weekly"],
            "unknown job; jobs: daily",
        ),
        (&["runs", "--status", "DONE"], "unknown status `DONE`"),
        (
            &["run", "show", "does-not-exist"],
            "no run with id `does-not-exist`",
        ),
        (
            &["--database-url", "mysql://x/y", "runs"],
            "unsupported scheme `mysql`",
        ),
    ];
    for (args, expected) in cases {
        let out = rainbow(d, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // clap rejects bad flags with exit code 2 too.
    let out = rainbow(d, &["materialize", "--select", "*", "--concurrency", "0"]);
    assert_eq!(out.status.code(), Some(2));

    // A malformed config file names itself and loses nothing.
    std::fs::write(d.join("rainbow.toml"), "[resources.shop\ncurrency = 1").expect("write");
    let out = rainbow(d, &["materialize", "--select", "*"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("rainbow.toml"), "{}", stderr(&out));
    std::fs::write(d.join("rainbow.toml"), "[resources.shop]\ncurrency = 1\n").expect("write");
    let out = Command::new(RAINBOW)
        .current_dir(d)
        .env_remove("RAINBOW_RESOURCE__SHOP__CURRENCY")
        .args(["materialize", "--select", "*"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("resource `shop`") && stderr(&out).contains("invalid type"),
        "{}",
        stderr(&out)
    );
}
