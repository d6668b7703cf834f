//! The `rainbow` binary as a user meets it: list, materialize, status, runs, runs show, bad input.

use std::path::Path;
use std::process::{Command, Output};

const RAINBOW: &str = env!("CARGO_BIN_EXE_rainbow");

fn rainbow(dir: &Path, args: &[&str]) -> Output {
    Command::new(RAINBOW)
        .env("RAINBOW_CODE_LOCATION", "quickstart")
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
    let out = rainbow(d, &["runs", "show", &run_id]);
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
            &["runs", "show", "does-not-exist"],
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
        .env("RAINBOW_CODE_LOCATION", "quickstart")
        .current_dir(d)
        .env_remove("RAINBOW_RESOURCE__SHOP__CURRENCY")
        .args(["materialize", "--select", "*"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("resource `shop`")
            && stderr(&out).contains("`resources.shop.currency`: expected a string"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn partitions_backfills_schedules_and_the_daemon_from_the_command_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();

    let out = rainbow(d, &["schedule", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("nightly_partitions")
            && text.contains("0 0 * * *")
            && text.contains("T00:00Z"),
        "{text}"
    );

    // A detached backfill is stored, shown, then canceled before anything ran.
    let out = rainbow(
        d,
        &[
            "backfill",
            "--select",
            "group:daily",
            "--from",
            "2024-09-01",
            "--to",
            "2024-09-03",
            "--detach",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("3 run(s) planned"),
        "{}",
        stdout(&out)
    );
    let out = rainbow(d, &["backfill", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let id = listed[0]["backfill"]["backfill_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(listed[0]["progress"]["pending"], 3);
    let out = rainbow(d, &["backfill", "show", &id]);
    assert!(
        stdout(&out).contains("status    requested"),
        "{}",
        stdout(&out)
    );
    let out = rainbow(d, &["backfill", "cancel", &id]);
    assert!(stdout(&out).contains("canceled"), "{}", stdout(&out));

    // Another one, detached, run by the daemon.
    let out = rainbow(
        d,
        &[
            "backfill",
            "--select",
            "group:daily",
            "--from",
            "2024-09-01",
            "--to",
            "2024-09-05",
            "--detach",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = rainbow(d, &["daemon", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 backfill(s) started"),
        "{}",
        stdout(&out)
    );

    let out = rainbow(d, &["partitions", "daily/orders", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let p: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(p["counts"]["materialized"], 5);
    assert_eq!(
        p["ranges"][0],
        serde_json::json!({"start": "2024-09-01", "end": "2024-09-05", "state": "materialized", "count": 5})
    );

    // Bad inputs name what is wrong.
    let cases: &[(&[&str], &str)] = &[
        (
            &["backfill", "--select", "group:daily"],
            "say which partitions",
        ),
        (
            &["backfill", "--select", "group:daily", "--missing", "--all"],
            "give only one of",
        ),
        (
            &[
                "backfill",
                "--select",
                "group:daily",
                "--partitions",
                "2023-01-01",
            ],
            "no selected asset has a partition `2023-01-01`",
        ),
        (
            &["partitions", "reports/summary"],
            "the asset is not partitioned",
        ),
        (
            &["partitions", "daily/order"],
            "did you mean `daily/orders`",
        ),
        (
            &["materialize", "--select", "daily/orders"],
            "give a partition key",
        ),
        (
            &[
                "materialize",
                "--select",
                "daily/orders",
                "--partition",
                "1999-01-01",
            ],
            "`1999-01-01` is not one of its partitions",
        ),
        (&["backfill", "show", "nope"], "no backfill with id `nope`"),
        (
            &["daemon", "--tag-limit", "warehouse=bq"],
            "expected KEY=VALUE:N",
        ),
        (
            &["add-partitions", "customers", "a,b"],
            "contains `|` or `,`",
        ),
    ];
    for (args, expected) in cases {
        let out = rainbow(d, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = rainbow(d, &["add-partitions", "customers", "acme"]);
    assert!(
        out.status.success() && stdout(&out).contains("added 1 key(s)"),
        "{}",
        stderr(&out)
    );
    let out = rainbow(
        d,
        &[
            "materialize",
            "--select",
            "daily/orders",
            "--partition",
            "2024-09-10",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn sql_projects_parse_and_compile_from_the_command_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let project = dir.path().join("proj");
    rainbow_dbt::synthetic::write_project(&project, 30).expect("project");
    let p = project.to_str().expect("utf-8 path");

    let out = rainbow(dir.path(), &["parse", "--project-dir", p]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("synthetic: 30 models, 1 seeds"),
        "{}",
        stdout(&out)
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(project.join("target/manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["nodes"].as_array().map(Vec::len), Some(31));

    let out = rainbow(
        dir.path(),
        &["compile", "--project-dir", p, "--vars", "{\"unused\": 1}"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let sql = std::fs::read_to_string(
        project.join("target/compiled/synthetic/models/layer000/m00000.sql"),
    )
    .expect("compiled");
    assert_eq!(sql, "select id, kind, amount from raw.events");

    // Generic tests are compiled next to their schema file, dbt style; a bad one fails parse.
    std::fs::write(
        project.join("models/checks.yml"),
        "version: 2\nmodels:\n  - name: m00000\n    columns:\n      - name: id\n        tests: [not_null]\n",
    )
    .expect("write");
    let out = rainbow(dir.path(), &["compile", "--project-dir", p]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sql = std::fs::read_to_string(
        project.join("target/compiled/synthetic/models/checks.yml/not_null_m00000_id.sql"),
    )
    .expect("compiled test");
    assert_eq!(sql, "select * from main.m00000 where id is null");
    std::fs::write(
        project.join("models/checks.yml"),
        "version: 2\nmodels:\n  - name: m00000\n    columns:\n      - name: id\n        tests: [accepted_values]\n",
    )
    .expect("write");
    let out = rainbow(dir.path(), &["parse", "--project-dir", p]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("checks.yml") && stderr(&out).contains("needs `values: [...]`"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(project.join("models/checks.yml")).expect("remove");

    let cases: &[(&[&str], &str)] = &[
        (
            &["parse", "--project-dir", "/nonexistent/project"],
            "no dbt_project.yml",
        ),
        (
            &["compile", "--project-dir", p, "--vars", "[1, 2"],
            "--vars",
        ),
    ];
    for (args, expected) in cases {
        let out = rainbow(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    std::fs::write(
        project.join("models/layer000/m00001.sql"),
        "select 1\nfrom {{ ref('m0000') }}\n",
    )
    .expect("write");
    let out = rainbow(dir.path(), &["parse", "--project-dir", p]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("model `m00001` refers to unknown `m0000` (did you mean `m00000`"),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        project.join("models/layer000/m00001.sql"),
        "select 1\nfrom {{ ref('m00000') }\n",
    )
    .expect("write");
    let out = rainbow(dir.path(), &["parse", "--project-dir", p]);
    assert!(
        stderr(&out).contains("models/layer000/m00001.sql:2:"),
        "{}",
        stderr(&out)
    );
}

/// The Rainbow code location (no `RAINBOW_CODE_LOCATION`): one parser, global options anywhere,
/// the configuration layered and its errors named, `--help` for every command.
#[test]
fn one_command_line_and_one_configuration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let mut c = Command::new(RAINBOW);
        c.current_dir(d)
            .env_remove("RAINBOW_CODE_LOCATION")
            .env_remove("RAINBOW_DATABASE_URL")
            .env_remove("RAINBOW_HOME")
            .env_remove("RAINBOW_LAKE")
            .args(args);
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().expect("run rainbow")
    };
    // `--home` before the command, as the demo's closing hint shows it after.
    let out = run(
        &[
            "--home",
            "h",
            "demo",
            "--days",
            "2",
            "--orders-per-day",
            "20",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Total sales"), "{}", stdout(&out));
    let settings = std::fs::read_to_string(d.join("h/rainbow.toml")).expect("settings");
    assert!(settings.contains("[pipeline]"), "{settings}");
    // Another seed on the same home is refused, not silently ignored.
    let out = run(
        &[
            "demo",
            "--home",
            "h",
            "--days",
            "2",
            "--orders-per-day",
            "20",
            "--seed",
            "7",
        ],
        &[],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("seed=42"), "{}", stderr(&out));
    let out = run(&["status", "--json", "--home", "h"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("main_views/total_sales"));

    // Every command is listed, and has its own help.
    let out = run(&["--help"], &[]);
    for command in [
        "materialize",
        "backfill",
        "build",
        "query",
        "demo",
        "seed-data",
        "bench",
    ] {
        assert!(
            stdout(&out).contains(command),
            "{command} missing: {}",
            stdout(&out)
        );
    }
    let out = run(&["build", "--help"], &[]);
    assert!(out.status.success() && stdout(&out).contains("--threads"));

    // A bad value names its variable; a misspelt section names its file; both exit 2.
    let out = run(
        &["list", "--home", "h"],
        &[("RAINBOW_PIPELINE__FRESHNESS_LAG", "soon")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("RAINBOW_PIPELINE__FRESHNESS_LAG"),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        d.join("rainbow.toml"),
        "[resource.shop]\ncurrency = \"EUR\"\n",
    )
    .expect("write");
    let out = run(&["list", "--home", "h"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("rainbow.toml") && stderr(&out).contains("did you mean `resources`"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(d.join("rainbow.toml")).expect("remove");
    // An unknown command names the closest one (clap), exit 2.
    let out = run(&["buidl"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("build"), "{}", stderr(&out));
}
