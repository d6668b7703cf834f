//! dbt projects on the embedded warehouse (rainbow-dbt + rainbow-warehouse, as engine runs): every
//! materialization with idempotence, seeds' type inference, SCD2 snapshots over a scripted
//! history, tests as checks, selection, the CLI's `build` and `query`.

use std::path::Path;

use rainbow_dbt::{RunSummary, Status, Verb};
use rainbow_engine::EventData;
use rainbow_warehouse::Warehouse;

use crate::support::DbtOptions as RunOptions;
use crate::support::warehouse_rows as rows;
use rainbow_warehouse::datafusion::arrow::datatypes::DataType;

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

async fn run(root: &Path, wh: &Warehouse, verb: Verb, options: &RunOptions) -> RunSummary {
    crate::support::dbt(root, wh, verb, options)
        .await
        .expect("run")
}

/// Run options whose `run_started_at` is `rfc3339` (snapshot times in the tests).
fn started_at(rfc3339: &str) -> RunOptions {
    RunOptions {
        run_started_at: Some(
            chrono::DateTime::parse_from_rfc3339(rfc3339)
                .expect("time")
                .with_timezone(&chrono::Utc),
        ),
        ..Default::default()
    }
}

/// Replaces `raw.items` with `source` (a query), then snapshots at `rfc3339`; every result of
/// the run must pass (`step` names it in the failure).
async fn snapshot_items(root: &Path, wh: &Warehouse, source: &str, rfc3339: &str, step: usize) {
    wh.execute(
        &format!("CREATE OR REPLACE TABLE raw.items AS {source}"),
        "source",
    )
    .await
    .expect("source");
    let summary = run(root, wh, Verb::Snapshot, &started_at(rfc3339)).await;
    assert!(
        failures(&summary).is_empty(),
        "step {step}: {:?}",
        failures(&summary)
    );
}

fn failures(summary: &RunSummary) -> Vec<String> {
    summary
        .results
        .iter()
        .filter(|r| !matches!(r.status, Status::Success | Status::Pass))
        .map(|r| format!("{} {:?}: {}", r.name, r.status, r.message))
        .collect()
}

/// A snapshot source's contents run by run: two rows; row 2 deleted; nothing changed; row 2
/// restored as it was; row 2 changed (queries of `id`, `v`, `u`).
pub(crate) fn hard_delete_steps() -> [String; 5] {
    let row = |id: u32, v: &str, u: &str| {
        format!("SELECT {id} AS id, '{v}' AS v, TIMESTAMP '{u} 00:00:00' AS u")
    };
    let (a, b) = (row(1, "a", "2024-01-01"), row(2, "b", "2024-01-01"));
    [
        format!("{a} UNION ALL {b}"),
        a.clone(),
        a.clone(),
        format!("{a} UNION ALL {b}"),
        format!("{a} UNION ALL {}", row(2, "c", "2024-01-20")),
    ]
}

const PROJECT: &str = "name: shop\nprofile: shop\nmodels:\n  shop:\n    +materialized: table\n    staging:\n      +materialized: view\n      +schema: staging\n";

fn shop() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    write(r, "dbt_project.yml", PROJECT);
    write(
        r,
        "seeds/events.csv",
        "id,kind,amount,at,flag\n1,a,1.5,2024-01-01,true\n2,b,2.5,2024-01-02,false\n3,a,3.0,2024-01-03,true\n",
    );
    write(
        r,
        "seeds/schema.yml",
        "version: 2\nseeds:\n  - name: events\n    config:\n      column_types:\n        amount: NUMERIC\n",
    );
    write(
        r,
        "models/staging/stg_events.sql",
        "select id, kind, amount, at from {{ ref('events') }}",
    );
    write(
        r,
        "models/events_by_kind.sql",
        "select kind, count(*) as n, sum(amount) as amount from {{ ref('stg_events') }} group by kind",
    );
    write(
        r,
        "models/inc_merge.sql",
        "{{ config(materialized='incremental', unique_key='id') }}\nselect id, kind, amount from {{ ref('stg_events') }}\n{% if is_incremental() %}where id >= (select max(id) - 1 from {{ this }}){% endif %}",
    );
    write(
        r,
        "models/inc_append.sql",
        "{{ config(materialized='incremental') }}\nselect id, kind from {{ ref('stg_events') }}\n{% if is_incremental() %}where id > (select max(id) from {{ this }}){% endif %}",
    );
    write(
        r,
        "models/inc_delete_insert.sql",
        "{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key=['kind']) }}\nselect kind, id, amount from {{ ref('stg_events') }}\n{% if is_incremental() %}where kind in (select kind from {{ ref('stg_events') }} where id = (select max(id) from {{ ref('stg_events') }})){% endif %}",
    );
    write(
        r,
        "models/eph.sql",
        "{{ config(materialized='ephemeral') }}\nselect id * 10 as id10 from {{ ref('stg_events') }}",
    );
    write(
        r,
        "models/uses_eph.sql",
        "select sum(id10) as s from {{ ref('eph') }}",
    );
    write(
        r,
        "models/schema.yml",
        "version: 2\nmodels:\n  - name: events_by_kind\n    columns:\n      - name: kind\n        tests: [unique, not_null]\n  - name: inc_merge\n    columns:\n      - name: id\n        tests:\n          - unique\n          - relationships:\n              to: ref('events')\n              field: id\n      - name: kind\n        tests:\n          - accepted_values:\n              values: ['a', 'b']\n              config:\n                severity: warn\n",
    );
    write(
        r,
        "tests/no_negative_amounts.sql",
        "select * from {{ ref('inc_merge') }} where amount < 0",
    );
    dir
}

async fn warehouse(dir: &Path) -> Warehouse {
    Warehouse::open(dir.join("wh").to_str().expect("utf-8"), "main")
        .await
        .expect("warehouse")
}

#[tokio::test]
async fn every_materialization_builds_and_rebuilding_changes_nothing() {
    let dir = shop();
    let r = dir.path();
    let wh = warehouse(r).await;
    let options = RunOptions::default();
    let first = run(r, &wh, Verb::Build, &options).await;
    assert!(failures(&first).is_empty(), "{:?}", failures(&first));
    assert_eq!(first.count(Status::Pass), 6, "{first:?}");

    // Seeds: inferred types, configured NUMERIC.
    let schema = wh.schema_of("main", "events").await.expect("seed table");
    let types: Vec<(String, DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    // Strings read back from Parquet as Utf8View (DataFusion's default).
    assert_eq!(
        types,
        vec![
            ("id".into(), DataType::Int64),
            ("kind".into(), DataType::Utf8View),
            ("amount".into(), DataType::Decimal128(38, 9)),
            ("at".into(), DataType::Date32),
            ("flag".into(), DataType::Boolean),
        ]
    );
    assert_eq!(
        wh.kind("main_staging", "stg_events"),
        Some(rainbow_warehouse::RelationKind::View)
    );
    assert_eq!(
        rows(
            &wh,
            "select kind, n, amount from events_by_kind order by kind"
        )
        .await,
        ["a|2|4.500000000", "b|1|2.500000000"]
    );
    assert_eq!(rows(&wh, "select s from uses_eph").await, ["60"]);
    assert_eq!(
        wh.kind("main", "eph"),
        None,
        "ephemeral models are not stored"
    );

    let snapshot = |wh: Warehouse| async move {
        let mut all = Vec::new();
        for t in [
            "inc_merge",
            "inc_append",
            "inc_delete_insert",
            "events_by_kind",
        ] {
            all.push(rows(&wh, &format!("select * from main.{t} order by 1, 2")).await);
        }
        all
    };
    let before = snapshot(wh.clone()).await;
    // Incremental models run twice on the same input: the same tables.
    let second = run(r, &wh, Verb::Build, &options).await;
    assert!(failures(&second).is_empty(), "{:?}", failures(&second));
    let mut messages: Vec<(&str, &str)> = second
        .results
        .iter()
        .filter(|x| x.name.starts_with("inc_"))
        .map(|x| (x.name.as_str(), x.message.as_str()))
        .collect();
    messages.sort();
    assert_eq!(
        messages,
        [
            ("inc_append", "APPEND"),
            ("inc_delete_insert", "DELETE+INSERT"),
            ("inc_merge", "MERGE")
        ]
    );
    assert_eq!(snapshot(wh.clone()).await, before);

    // New and changed source rows: merge updates and inserts, append adds only new rows,
    // delete+insert replaces the touched key.
    write(
        r,
        "seeds/events.csv",
        "id,kind,amount,at,flag\n1,a,1.5,2024-01-01,true\n2,b,2.5,2024-01-02,false\n3,a,30.0,2024-01-03,true\n4,b,4.0,2024-01-04,true\n",
    );
    let third = run(r, &wh, Verb::Build, &options).await;
    assert!(failures(&third).is_empty(), "{:?}", failures(&third));
    assert_eq!(
        rows(&wh, "select id, amount from inc_merge order by id").await,
        [
            "1|1.500000000",
            "2|2.500000000",
            "3|30.000000000",
            "4|4.000000000"
        ]
    );
    assert_eq!(
        rows(&wh, "select id from inc_append order by id").await,
        ["1", "2", "3", "4"]
    );
    assert_eq!(
        rows(
            &wh,
            "select kind, id from inc_delete_insert order by kind, id"
        )
        .await,
        ["a|1", "a|3", "b|2", "b|4"]
    );
    // --full-refresh rebuilds from scratch.
    let refresh = RunOptions {
        full_refresh: true,
        select: vec!["inc_merge".into()],
        ..Default::default()
    };
    let fourth = run(r, &wh, Verb::Run, &refresh).await;
    assert_eq!(fourth.results.len(), 1);
    assert_eq!(fourth.results[0].message, "CREATE TABLE");
}

#[tokio::test]
async fn failing_tests_report_by_severity_and_errors_skip_downstream() {
    let dir = shop();
    let r = dir.path();
    write(
        r,
        "seeds/events.csv",
        "id,kind,amount,at,flag\n1,a,1.5,2024-01-01,true\n1,c,-2.5,2024-01-02,false\n",
    );
    write(
        r,
        "models/downstream.sql",
        "select * from {{ ref('inc_merge') }}",
    );
    write(
        r,
        "models/downstream.yml",
        "version: 2\nmodels:\n  - name: downstream\n    columns:\n      - name: id\n        tests: [not_null]\n",
    );
    let wh = warehouse(r).await;
    let summary = run(r, &wh, Verb::Build, &RunOptions::default()).await;
    let status = |name: &str| {
        summary
            .results
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.status)
            .unwrap_or_else(|| panic!("{name} not run"))
    };
    assert_eq!(status("unique_inc_merge_id"), Status::Fail);
    assert_eq!(status("accepted_values_inc_merge_kind"), Status::Warn);
    assert_eq!(status("no_negative_amounts"), Status::Fail);
    assert_eq!(status("downstream"), Status::Skipped);
    // The skipped model's test is skipped with it (SKIP=2 below).
    assert_eq!(status("not_null_downstream_id"), Status::Skipped);
    assert!(!summary.success());
    // `test` runs every selected test: a failing one never skips another (dbt test).
    let tests = run(r, &wh, Verb::Test, &RunOptions::default()).await;
    let not_null = tests
        .results
        .iter()
        .find(|x| x.name == "not_null_downstream_id")
        .expect("the downstream test ran");
    assert_ne!(not_null.status, Status::Skipped, "{tests:?}");
    assert!(
        summary.done_line().contains("SKIP=2"),
        "{}",
        summary.done_line()
    );
}

#[tokio::test]
async fn a_model_with_bad_sql_errors_with_its_file_and_the_rest_still_runs() {
    let dir = shop();
    let r = dir.path();
    write(
        r,
        "models/broken.sql",
        "{{ config(materialized='table') }}\n{# nope( is not a call #}\n\nselect\n  nope( from {{ ref('events') }}\n",
    );
    write(
        r,
        "models/after_broken.sql",
        "select * from {{ ref('broken') }}",
    );
    // The same mistake in a view (the default materialization) is placed the same way.
    write(
        r,
        "models/broken_view.sql",
        "-- a view\nselect\n  nope( from {{ ref('events') }}\n",
    );
    // SQL that ends too early is placed at its last line.
    write(
        r,
        "models/cut_short.sql",
        "{{ config(materialized='table') }}\nselect *\nfrom {{ ref('events') }}\nwhere kind in ('a',\n\n",
    );
    // A mistake in an ephemeral model shows where it is inlined, naming the ephemeral model.
    write(
        r,
        "models/broken_ephemeral.sql",
        "{{ config(materialized='ephemeral') }}\nselect\n  nope( from {{ ref('events') }}\n",
    );
    write(
        r,
        "models/uses_ephemeral.sql",
        "{{ config(materialized='table') }}\nselect * from {{ ref('broken_ephemeral') }}\n",
    );
    let wh = warehouse(r).await;
    let summary = run(r, &wh, Verb::Build, &RunOptions::default()).await;
    let result = |name: &str| {
        summary
            .results
            .iter()
            .find(|x| x.name == name)
            .unwrap_or_else(|| panic!("{name} did not run"))
    };
    let inlined = result("uses_ephemeral");
    assert!(
        inlined
            .message
            .starts_with("models/uses_ephemeral.sql (compiled SQL line 3 column")
            && inlined.message.contains(
                "in the SQL of the ephemeral model `broken_ephemeral` that ref() inlined)"
            ),
        "{}",
        inlined.message
    );
    let cut = result("cut_short");
    assert!(
        cut.message
            .starts_with("models/cut_short.sql line 4 column 20 (compiled SQL line 3)"),
        "{}",
        cut.message
    );
    let view = result("broken_view");
    assert!(
        view.message.starts_with(
            "models/broken_view.sql line 3, as rendered by Jinja (compiled SQL line 3 column"
        ),
        "{}",
        view.message
    );
    let broken = result("broken");
    assert_eq!(broken.status, Status::Error);
    // The parser's position is put at the file's line (Jinja dropped the first three lines);
    // the line also holds `ref()`, so it is named as Jinja's.
    assert!(
        broken.message.starts_with(
            "models/broken.sql line 5, as rendered by Jinja (compiled SQL line 2 column"
        ),
        "{}",
        broken.message
    );
    let after = result("after_broken");
    assert_eq!(after.status, Status::Skipped);
    assert!(
        summary
            .results
            .iter()
            .any(|x| x.name == "events_by_kind" && x.status == Status::Success)
    );
}

#[tokio::test]
async fn selection_by_name_graph_path_and_materialization() {
    let dir = shop();
    let r = dir.path();
    let wh = warehouse(r).await;
    let names = |s: &RunSummary| {
        let mut n: Vec<String> = s.results.iter().map(|x| x.name.clone()).collect();
        n.sort();
        n
    };
    let select = |s: &[&str], e: &[&str]| RunOptions {
        select: s.iter().map(|x| x.to_string()).collect(),
        exclude: e.iter().map(|x| x.to_string()).collect(),
        ..Default::default()
    };
    let seeded = run(r, &wh, Verb::Seed, &RunOptions::default()).await;
    assert_eq!(names(&seeded), ["events"]);
    let s = run(r, &wh, Verb::Run, &select(&["path:models/staging"], &[])).await;
    assert_eq!(names(&s), ["stg_events"]);
    let s = run(
        r,
        &wh,
        Verb::Run,
        &select(&["config.materialized:incremental"], &["inc_append"]),
    )
    .await;
    assert_eq!(names(&s), ["inc_delete_insert", "inc_merge"]);
    let s = run(
        r,
        &wh,
        Verb::Build,
        &select(&["+events_by_kind"], &["resource_type:test"]),
    )
    .await;
    assert_eq!(names(&s), ["events", "events_by_kind", "stg_events"]);
    let s = run(r, &wh, Verb::Test, &select(&["test_name:unique"], &[])).await;
    assert_eq!(
        names(&s),
        ["unique_events_by_kind_kind", "unique_inc_merge_id"]
    );
    // Eager: a test reading a selected node is selected, even one sitting on another node
    // (relationships from inc_merge to events); methods intersect on tests too.
    let s = run(r, &wh, Verb::Test, &select(&["events"], &[])).await;
    assert_eq!(names(&s), ["relationships_inc_merge_id"]);
    let s = run(
        r,
        &wh,
        Verb::Test,
        &select(&["inc_merge,test_name:unique"], &[]),
    )
    .await;
    assert_eq!(names(&s), ["unique_inc_merge_id"]);
    let err = crate::support::dbt(r, &wh, Verb::Run, &select(&["tag:nope"], &[]))
        .await
        .expect_err("unknown tag");
    assert!(err.to_string().contains("tag:nope"), "{err}");
    // dbt's other methods: @ (the node, its descendants, all their ancestors — the seed
    // `events` too, which `run` does not build), fqn (prefix or
    // name; also the default for a dotted name), file, package, config.<any key>, test_type.
    let s = run(r, &wh, Verb::Run, &select(&["@stg_events"], &[])).await;
    assert_eq!(
        names(&s),
        [
            "eph",
            "events_by_kind",
            "inc_append",
            "inc_delete_insert",
            "inc_merge",
            "stg_events",
            "uses_eph"
        ]
    );
    let s = run(r, &wh, Verb::Run, &select(&["shop.staging"], &[])).await;
    assert_eq!(names(&s), ["stg_events"]);
    let s = run(
        r,
        &wh,
        Verb::Run,
        &select(&["fqn:uses_eph", "file:eph.sql"], &[]),
    )
    .await;
    assert_eq!(names(&s), ["eph", "uses_eph"]);
    let s = run(
        r,
        &wh,
        Verb::Run,
        &select(&["package:shop,config.schema:staging"], &[]),
    )
    .await;
    assert_eq!(names(&s), ["stg_events"]);
    let s = run(
        r,
        &wh,
        Verb::Run,
        &select(&["config.incremental_strategy:delete+insert"], &[]),
    )
    .await;
    assert_eq!(names(&s), ["inc_delete_insert"]);
    let s = run(r, &wh, Verb::Test, &select(&["test_type:singular"], &[])).await;
    assert_eq!(names(&s), ["no_negative_amounts"]);
    let s = run(
        r,
        &wh,
        Verb::Test,
        &select(&["test_type:generic,inc_merge"], &[]),
    )
    .await;
    assert_eq!(
        names(&s),
        [
            "accepted_values_inc_merge_kind",
            "relationships_inc_merge_id",
            "unique_inc_merge_id"
        ]
    );
}

/// YAML selectors: `--selector NAME`, the `default: true` one without a selection, and an
/// unknown name refused with the known ones.
#[test]
fn cli_yaml_selectors_pick_the_nodes() {
    let dir = shop();
    let r = dir.path();
    write(
        r,
        "selectors.yml",
        "selectors:\n  - name: staging_up\n    default: true\n    definition:\n      method: path\n      value: models/staging\n      parents: true\n  - name: incrementals\n    definition:\n      union:\n        - 'config.materialized:incremental'\n        - exclude: [inc_append, {method: resource_type, value: test}]\n",
    );
    let bin = env!("CARGO_BIN_EXE_rainbow");
    let rainbow = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .args(["--project-dir", r.to_str().expect("utf-8")])
            .env("RAINBOW_HOME", r.join("home"))
            .output()
            .expect("runs");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let (ok, out) = rainbow(&["build"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Done. PASS=2 WARN=0 ERROR=0 SKIP=0 TOTAL=2"),
        "{out}"
    );
    let (ok, out) = rainbow(&["build", "--selector", "incrementals"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("model main.inc_merge") && out.contains("model main.inc_delete_insert"),
        "{out}"
    );
    assert!(
        !out.contains("inc_append") && !out.contains("test "),
        "{out}"
    );
    let (ok, out) = rainbow(&["build", "--selector", "incremental"]);
    assert!(!ok);
    assert!(
        out.contains("no selector `incremental`") && out.contains("incrementals"),
        "{out}"
    );
}

/// dbt's Jinja is Python's: lists and dicts are mutable, `return()` ends a macro from inside
/// a loop with a value of any type, Python's string/dict methods and dbt's `tojson`,
/// `fromjson`, `zip`, `modules.re` exist — a model using them builds.
#[tokio::test]
async fn macros_with_python_semantics_build() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    write(r, "dbt_project.yml", PROJECT);
    write(
        r,
        "macros/cols.sql",
        "{% macro cols(names) -%}\n  {%- set out = [] -%}\n  {%- for n in names -%}\n    {%- do out.append(n ~ ' AS c_' ~ n) -%}\n  {%- endfor -%}\n  {%- do out.extend(['0 AS zero']) -%}\n  {{ return(out) }}\n{%- endmacro %}\n{% macro power_at_least(n) -%}\n  {%- for _ in range(1, 64) -%}\n    {%- if n <= 2 ** loop.index -%}{{ return(loop.index) }}{%- endif -%}\n  {%- endfor -%}\n{%- endmacro %}\n{% macro settings() -%}\n  {%- set d = {} -%}\n  {%- do d.update({'a': 1}) -%}\n  {%- do d.setdefault('b', 2) -%}\n  {{ return(d) }}\n{%- endmacro %}\n",
    );
    write(
        r,
        "models/python.sql",
        "{%- set c = cols(['1', '2']) -%}\n{%- do c.append(power_at_least(100) ~ ' AS p') -%}\n{%- set d = settings() -%}\nselect {{ c | join(', ') }}, {{ d['a'] + d.get('b') }} AS s, '{{ tojson(fromjson('{\"k\": [1, 2]}')) }}' AS j,\n  '{{ modules.re.sub('[aeiou]', '', 'rainbow') }}' AS r, {{ zip([1, 2], [3, 4]) | length }} AS z,\n  '{{ 'A_b'.lower().replace('_', '-') }}' AS t",
    );
    let wh = warehouse(r).await;
    let s = run(r, &wh, Verb::Run, &RunOptions::default()).await;
    assert!(failures(&s).is_empty(), "{:?}", failures(&s));
    assert_eq!(
        rows(&wh, "select * from python").await,
        ["1|2|0|7|3|{\"k\": [1, 2]}|rnbw|2|a-b"]
    );
}

const SNAPSHOT: &str = "{% snapshot products_snapshot %}\n{{ config(target_schema='snapshots', unique_key='id', strategy='timestamp', updated_at='updated_at', hard_deletes='invalidate', dbt_valid_to_current=\"TIMESTAMP '2100-01-01'\", snapshot_meta_column_names={'dbt_valid_from': 'valid_from', 'dbt_valid_to': 'valid_to', 'dbt_is_current': 'is_current'}) }}\nselect id, name, price, updated_at from {{ source('raw', 'products') }}\n{% endsnapshot %}\n";

#[tokio::test]
async fn snapshots_keep_scd2_history_version_by_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    write(r, "dbt_project.yml", PROJECT);
    write(
        r,
        "models/sources.yml",
        "version: 2\nsources:\n  - name: raw\n    tables:\n      - name: products\n",
    );
    write(r, "snapshots/products.sql", SNAPSHOT);
    // A singular test reading only a source is a check on the source asset.
    write(
        r,
        "tests/source_ids_present.sql",
        "select * from {{ source('raw', 'products') }} where id is null",
    );
    let wh = warehouse(r).await;
    let source = |rows: &str| {
        format!(
            "CREATE OR REPLACE TABLE raw.products AS SELECT id, name, CAST(price AS NUMERIC) AS price, CAST(updated_at AS TIMESTAMP) AS updated_at FROM ({rows}) AS p"
        )
    };
    let day = |d: u32| started_at(&format!("2024-01-0{d}T23:00:00Z"));
    let steps = [
        // Day 1: two products.
        "SELECT 1 AS id, 'lamp' AS name, 10 AS price, '2024-01-01 08:00:00' AS updated_at UNION ALL SELECT 2, 'desk', 200, '2024-01-01 08:00:00'",
        // Day 2: product 1 renamed.
        "SELECT 1 AS id, 'lamp pro' AS name, 10 AS price, '2024-01-02 09:00:00' AS updated_at UNION ALL SELECT 2, 'desk', 200, '2024-01-01 08:00:00'",
        // Day 3: product 2's price changes; product 3 appears.
        "SELECT 1 AS id, 'lamp pro' AS name, 10 AS price, '2024-01-02 09:00:00' AS updated_at UNION ALL SELECT 2, 'desk', 180, '2024-01-03 10:00:00' UNION ALL SELECT 3, 'chair', 50, '2024-01-03 11:00:00'",
        // Day 4: product 1 is deleted at the source; nothing else changes.
        "SELECT 2 AS id, 'desk' AS name, 180 AS price, '2024-01-03 10:00:00' AS updated_at UNION ALL SELECT 3, 'chair', 50, '2024-01-03 11:00:00'",
    ];
    for (i, step) in steps.iter().enumerate() {
        wh.execute(&source(step), "source").await.expect("source");
        let s = run(r, &wh, Verb::Snapshot, &day(i as u32 + 1)).await;
        assert!(failures(&s).is_empty(), "day {}: {:?}", i + 1, failures(&s));
    }
    let checked = run(
        r,
        &wh,
        Verb::Test,
        &RunOptions {
            select: vec!["source_ids_present".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(checked.count(Status::Pass), 1, "{checked:?}");
    // Running the snapshot again on unchanged input changes nothing.
    let s = run(r, &wh, Verb::Snapshot, &day(5)).await;
    assert!(failures(&s).is_empty(), "{:?}", failures(&s));
    let got = rows(
        &wh,
        "select id, name, price, valid_from, valid_to, is_current from snapshots.products_snapshot order by id, valid_from",
    )
    .await;
    assert_eq!(
        got,
        [
            "1|lamp|10.000000000|2024-01-01T08:00:00Z|2024-01-02T09:00:00Z|false",
            "1|lamp pro|10.000000000|2024-01-02T09:00:00Z|2024-01-04T23:00:00Z|false",
            "2|desk|200.000000000|2024-01-01T08:00:00Z|2024-01-03T10:00:00Z|false",
            "2|desk|180.000000000|2024-01-03T10:00:00Z|2100-01-01T00:00:00Z|true",
            "3|chair|50.000000000|2024-01-03T11:00:00Z|2100-01-01T00:00:00Z|true",
        ]
    );
    let ids = rows(
        &wh,
        "select count(distinct dbt_scd_id), count(*) from snapshots.products_snapshot",
    )
    .await;
    assert_eq!(ids, ["5|5"]);
}

/// Hard deletes, every strategy × mode over the sequence delete → re-run unchanged → restore
/// (same values) → change: dbt's rows (its snapshot_staging_table: a missing row is a delete,
/// never a change; `invalidate` closes it at the snapshot time; `new_record` closes it and
/// adds one deletion marker, closed again when the row comes back; the timestamp strategy's
/// validity comes from `updated_at`, the check strategy's from the snapshot time).
#[tokio::test]
async fn snapshots_with_hard_deletes_give_dbts_rows_in_every_strategy_and_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    write(r, "dbt_project.yml", PROJECT);
    write(
        r,
        "models/sources.yml",
        "version: 2\nsources:\n  - name: raw\n    tables:\n      - name: items\n",
    );
    let strategies = [
        ("ts", "strategy='timestamp', updated_at='u'"),
        ("ck", "strategy='check', check_cols='all'"),
    ];
    for (s, strategy) in strategies {
        for mode in ["ignore", "invalidate", "new_record"] {
            write(
                r,
                &format!("snapshots/{s}_{mode}.sql"),
                &format!(
                    "{{% snapshot {s}_{mode} %}}\n{{{{ config(target_schema='snapshots', unique_key='id', {strategy}, hard_deletes='{mode}') }}}}\nselect id, v, u from {{{{ source('raw', 'items') }}}}\n{{% endsnapshot %}}\n"
                ),
            );
        }
    }
    let wh = warehouse(r).await;
    let steps = hard_delete_steps();
    for (i, step) in steps.iter().enumerate() {
        let at = format!("2024-02-0{}T00:00:00Z", i + 1);
        snapshot_items(r, &wh, step, &at, i + 1).await;
    }
    // Times as dates: u1 = 01-01, u5 = 01-20, T<n> = 02-0<n>.
    let history = |name: &str, deleted: bool| {
        let wh = &wh;
        let name = name.to_owned();
        async move {
            let flag = if deleted { ", dbt_is_deleted" } else { "" };
            rows(
                wh,
                &format!(
                    "select id, v, format_timestamp('%m-%d', dbt_valid_from), coalesce(format_timestamp('%m-%d', dbt_valid_to), 'open'), format_timestamp('%m-%d', dbt_updated_at){flag} from snapshots.{name} order by id, dbt_valid_from, dbt_valid_to nulls last"
                ),
            )
            .await
        }
    };
    let one = "1|a|01-01|open|01-01";
    assert_eq!(
        history("ts_ignore", false).await,
        [one, "2|b|01-01|01-20|01-01", "2|c|01-20|open|01-20"]
    );
    assert_eq!(
        history("ts_invalidate", false).await,
        [
            one,
            "2|b|01-01|01-20|01-01",
            "2|b|01-01|02-02|01-01",
            "2|c|01-20|open|01-20"
        ]
    );
    assert_eq!(
        history("ts_new_record", true).await,
        [
            "1|a|01-01|open|01-01|false",
            "2|b|01-01|01-20|01-01|false",
            "2|b|01-01|02-02|01-01|false",
            "2|c|01-20|open|01-20|false",
            "2|b|02-02|01-01|02-02|true"
        ]
    );
    let one = "1|a|02-01|open|02-01";
    assert_eq!(
        history("ck_ignore", false).await,
        [one, "2|b|02-01|02-05|02-01", "2|c|02-05|open|02-05"]
    );
    assert_eq!(
        history("ck_invalidate", false).await,
        [
            one,
            "2|b|02-01|02-02|02-01",
            "2|b|02-04|02-05|02-04",
            "2|c|02-05|open|02-05"
        ]
    );
    assert_eq!(
        history("ck_new_record", true).await,
        [
            "1|a|02-01|open|02-01|false",
            "2|b|02-01|02-02|02-01|false",
            "2|b|02-02|02-04|02-02|true",
            "2|b|02-04|02-05|02-04|false",
            "2|c|02-05|open|02-05|false"
        ]
    );
}

/// `on_schema_change` in every mode × incremental strategy as the model's columns change: a
/// column added, one removed, one whose type cannot hold the old values. Each mode does what
/// dbt documents or fails naming the columns; no value is dropped silently (`ignore` names the
/// column it leaves out in the build message).
#[tokio::test]
async fn incremental_schema_changes_follow_dbt_in_every_strategy_and_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    write(r, "dbt_project.yml", PROJECT);
    write(
        r,
        "models/sources.yml",
        "version: 2\nsources:\n  - name: raw\n    tables:\n      - name: src\n",
    );
    let strategies = [
        ("ap", "incremental_strategy='append'"),
        ("mg", "incremental_strategy='merge', unique_key='id'"),
        (
            "di",
            "incremental_strategy='delete+insert', unique_key='id'",
        ),
    ];
    let modes = ["ignore", "fail", "append_new_columns", "sync_all_columns"];
    for (s, strategy) in strategies {
        for mode in modes {
            write(
                r,
                &format!("models/{s}_{mode}.sql"),
                &format!(
                    "{{{{ config(materialized='incremental', {strategy}, on_schema_change='{mode}') }}}}\nselect * from {{{{ source('raw', 'src') }}}}"
                ),
            );
        }
    }
    let wh = warehouse(r).await;
    let step = |sql: &'static str| {
        let (wh, r) = (&wh, r);
        async move {
            wh.execute(
                &format!("CREATE OR REPLACE TABLE raw.src AS {sql}"),
                "source",
            )
            .await
            .expect("source");
            let summary = run(r, wh, Verb::Run, &RunOptions::default()).await;
            summary
                .results
                .iter()
                .map(|n| (n.name.clone(), (n.status, n.message.clone())))
                .collect::<std::collections::BTreeMap<_, _>>()
        }
    };
    let table = |name: &str| {
        let (wh, name) = (&wh, name.to_owned());
        async move {
            let columns = rows(
                wh,
                &format!("select column_name from information_schema.columns where table_name = '{name}' order by ordinal_position"),
            )
            .await
            .join(",");
            let content = rows(wh, &format!("select * from {name} order by 1, 2")).await;
            (columns, content)
        }
    };
    step("SELECT 1 AS id, 'a' AS v UNION ALL SELECT 2, 'b'").await;

    // A column added: w.
    let built = step("SELECT 2 AS id, 'b2' AS v, 'x2' AS w UNION ALL SELECT 3, 'c', 'x3'").await;
    for (s, _) in strategies {
        let ignore = &built[&format!("{s}_ignore")];
        assert_eq!(ignore.0, Status::Success, "{s}: {ignore:?}");
        assert!(ignore.1.contains("`w` ignored"), "{s}: {ignore:?}");
        let fail = &built[&format!("{s}_fail")];
        assert_eq!(fail.0, Status::Error, "{s}: {fail:?}");
        assert!(fail.1.contains("new columns `w`"), "{s}: {fail:?}");
        for mode in ["append_new_columns", "sync_all_columns"] {
            assert_eq!(built[&format!("{s}_{mode}")].0, Status::Success);
        }
    }
    let kept = ["1|a|NULL", "2|b2|x2", "3|c|x3"];
    let appended = ["1|a|NULL", "2|b|NULL", "2|b2|x2", "3|c|x3"];
    for mode in ["append_new_columns", "sync_all_columns"] {
        assert_eq!(
            table(&format!("ap_{mode}")).await,
            ("id,v,w".into(), appended.map(String::from).to_vec())
        );
        assert_eq!(
            table(&format!("mg_{mode}")).await,
            ("id,v,w".into(), kept.map(String::from).to_vec())
        );
        assert_eq!(
            table(&format!("di_{mode}")).await,
            ("id,v,w".into(), kept.map(String::from).to_vec())
        );
    }
    assert_eq!(table("ap_ignore").await.1, ["1|a", "2|b", "2|b2", "3|c"]);
    assert_eq!(table("mg_ignore").await.1, ["1|a", "2|b2", "3|c"]);
    assert_eq!(
        table("ap_fail").await,
        ("id,v".into(), vec!["1|a".into(), "2|b".into()])
    );

    // A column removed: v.
    let built = step("SELECT 3 AS id, 'y3' AS w UNION ALL SELECT 4, 'x4'").await;
    for (s, _) in strategies {
        for mode in ["ignore", "fail"] {
            let (status, message) = &built[&format!("{s}_{mode}")];
            assert_eq!(*status, Status::Error, "{s}_{mode}: {message}");
            assert!(message.contains("`v`"), "{s}_{mode}: {message}");
        }
    }
    // append_new_columns keeps v (a merge leaves it in matched rows); sync drops it.
    assert_eq!(
        table("ap_append_new_columns").await.1,
        [
            "1|a|NULL",
            "2|b|NULL",
            "2|b2|x2",
            "3|NULL|y3",
            "3|c|x3",
            "4|NULL|x4"
        ]
    );
    assert_eq!(
        table("mg_append_new_columns").await.1,
        ["1|a|NULL", "2|b2|x2", "3|c|y3", "4|NULL|x4"]
    );
    assert_eq!(
        table("di_append_new_columns").await.1,
        ["1|a|NULL", "2|b2|x2", "3|NULL|y3", "4|NULL|x4"]
    );
    assert_eq!(
        table("mg_sync_all_columns").await,
        (
            "id,w".into(),
            ["1|NULL", "2|x2", "3|y3", "4|x4"]
                .map(String::from)
                .to_vec()
        )
    );

    // A type the table's column cannot hold: id as text.
    let built = step("SELECT 'k5' AS id, 'x5' AS w").await;
    for (s, _) in strategies {
        for mode in ["ignore", "fail", "append_new_columns"] {
            let (status, message) = &built[&format!("{s}_{mode}")];
            assert_eq!(*status, Status::Error, "{s}_{mode}: {message}");
            assert!(message.contains("column `id`"), "{s}_{mode}: {message}");
        }
        let (status, message) = &built[&format!("{s}_sync_all_columns")];
        assert_eq!(*status, Status::Success, "{s}: {message}");
    }
    assert_eq!(
        table("mg_sync_all_columns").await.1,
        ["1|NULL", "2|x2", "3|y3", "4|x4", "k5|x5"]
    );
    // The reverse is refused: text that is not a number cannot become INT64.
    let built = step("SELECT 6 AS id, 'x6' AS w").await;
    let (status, message) = &built["mg_sync_all_columns"];
    assert_eq!(*status, Status::Error, "{message}");
    assert!(
        message.contains("1 existing value(s) do not convert"),
        "{message}"
    );
}

#[tokio::test]
async fn check_strategy_snapshots_compare_the_checked_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    write(r, "dbt_project.yml", PROJECT);
    write(
        r,
        "models/sources.yml",
        "version: 2\nsources:\n  - name: raw\n    tables:\n      - name: sellers\n",
    );
    write(
        r,
        "snapshots/sellers.sql",
        "{% snapshot sellers_snapshot %}\n{{ config(target_schema='snapshots', unique_key='id', strategy='check', check_cols=['city']) }}\nselect * from {{ source('raw', 'sellers') }}\n{% endsnapshot %}\n",
    );
    let wh = warehouse(r).await;
    let at = started_at;
    wh.execute(
        "CREATE TABLE raw.sellers AS SELECT 1 AS id, 'Hanoi' AS city, 'x' AS note",
        "s",
    )
    .await
    .expect("source");
    run(r, &wh, Verb::Snapshot, &at("2024-02-01T00:00:00Z")).await;
    // A change to an unchecked column is not a new version; a change to `city` is.
    wh.execute(
        "CREATE OR REPLACE TABLE raw.sellers AS SELECT 1 AS id, 'Hanoi' AS city, 'y' AS note",
        "s",
    )
    .await
    .expect("source");
    run(r, &wh, Verb::Snapshot, &at("2024-02-02T00:00:00Z")).await;
    wh.execute(
        "CREATE OR REPLACE TABLE raw.sellers AS SELECT 1 AS id, 'Hue' AS city, 'y' AS note",
        "s",
    )
    .await
    .expect("source");
    run(r, &wh, Verb::Snapshot, &at("2024-02-03T00:00:00Z")).await;
    assert_eq!(
        rows(&wh, "select city, dbt_valid_from, dbt_valid_to from snapshots.sellers_snapshot order by dbt_valid_from").await,
        [
            "Hanoi|2024-02-01T00:00:00Z|2024-02-03T00:00:00Z",
            "Hue|2024-02-03T00:00:00Z|NULL",
        ]
    );
}

#[test]
fn cli_build_then_query_prints_tables_and_csv() {
    let dir = shop();
    let r = dir.path();
    let bin = env!("CARGO_BIN_EXE_rainbow");
    let out = std::process::Command::new(bin)
        .args(["build", "--project-dir", r.to_str().expect("utf-8")])
        .env("RAINBOW_HOME", r.join("home"))
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Done. PASS=14 WARN=0 ERROR=0 SKIP=0 TOTAL=14"),
        "{stdout}"
    );
    let out = std::process::Command::new(bin)
        .args([
            "query",
            "select kind, n from events_by_kind order by kind",
            "--format",
            "csv",
        ])
        .env("RAINBOW_HOME", r.join("home"))
        .output()
        .expect("runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kind,n\na,2\nb,1\n");
    // The table shows NULL as `NULL`, unlike an empty string; BigQuery's SAFE. meaning.
    let out = std::process::Command::new(bin)
        .args([
            "query",
            "select SAFE.SUBSTR('foo', 0, -2) AS s, '' AS e, SUBSTR('apple', -2) AS t",
        ])
        .env("RAINBOW_HOME", r.join("home"))
        .output()
        .expect("runs");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("| NULL |   | le |"),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(bin)
        .args(["query", "select * from evnts_by_kind"])
        .env("RAINBOW_HOME", r.join("home"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did you mean `main.events_by_kind`?"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rust asset `raw/orders` (written to the warehouse) -> SQL models (a partitioned daily
/// model, a table with a blocking test) -> Rust asset reading a model: one graph, one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_models_and_rust_assets_share_one_graph() {
    use rainbow_engine::prelude::*;
    use std::collections::HashSet;

    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    write(
        r,
        "dbt_project.yml",
        "name: shop\nprofile: shop\nmodels:\n  shop:\n    +materialized: table\n",
    );
    write(
        r,
        "models/sources.yml",
        "version: 2\nsources:\n  - name: raw\n    tables:\n      - name: orders\nmodels:\n  - name: revenue\n    columns:\n      - name: day\n        tests: [unique, not_null]\n",
    );
    write(
        r,
        "models/revenue.sql",
        "select order_date as day, sum(amount) as revenue from {{ source('raw', 'orders') }} group by order_date",
    );
    write(
        r,
        "models/daily_orders.sql",
        "select count(*) as n, '{{ partition_key }}' as day from {{ source('raw', 'orders') }} where order_date = DATE '{{ partition_key }}'",
    );
    let location = r.join("wh").to_string_lossy().into_owned();
    let loc = location.clone();
    let orders = asset(AssetKey::new(["raw", "orders"])).compute(move |_| {
        let loc = loc.clone();
        async move {
            let wh = Warehouse::open(&loc, "main").await?;
            wh.execute(
                "CREATE OR REPLACE TABLE raw.orders AS SELECT DATE '2024-01-01' AS order_date, 10 AS amount UNION ALL SELECT DATE '2024-01-01', 5 UNION ALL SELECT DATE '2024-01-02', 7",
                "raw orders",
            )
            .await?;
            Ok::<_, BoxError>(MaterializeResult::new().row_count(3))
        }
    });
    let loc = location.clone();
    let report = asset("report")
        .dep(AssetKey::new(["main", "revenue"]))
        .compute(move |_| {
            let loc = loc.clone();
            async move {
                let wh = Warehouse::open(&loc, "main").await?;
                let n = wh
                    .query("SELECT SUM(revenue) FROM revenue", "report")
                    .await?;
                Ok::<_, BoxError>(MaterializeResult::new().metadata("batches", n.len() as i64))
            }
        });
    let produced: HashSet<AssetKey> = [AssetKey::new(["raw", "orders"])].into_iter().collect();
    let sql = rainbow_dbt::SqlProject::new(r, location.clone())
        .partitioned("daily_orders", PartitionsDefinition::daily("2024-01-01"))
        .declare(&produced)
        .expect("sql assets")
        .assets;
    let mut keys: Vec<String> = sql
        .iter()
        .flat_map(|a| a.keys().map(|k| k.to_string()))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["main/daily_orders", "main/revenue"],
        "no source asset for raw/orders: a Rust asset makes it"
    );
    let defs = Definitions::new().asset(orders).asset(report).assets(sql);
    let storage = crate::support::fresh_storage(crate::support::Backend::Sqlite).await;
    let partitioned = rainbow_dbt::SqlProject::new(r, location.clone())
        .partitioned("daily_orders", PartitionsDefinition::daily("2024-01-01"))
        .declare(&HashSet::new())
        .expect("sql assets")
        .assets;
    let result =
        crate::support::materialize(defs, &storage.storage, "raw/orders main/revenue report").await;
    assert!(result.success(), "{result:?}");
    assert_eq!(result.steps.len(), 3, "{result:?}");
    let evs = crate::support::events(&storage.storage, &result.run_id).await;
    let checks: Vec<(String, bool)> = evs
        .iter()
        .filter_map(|e| match &e.data {
            EventData::CheckEvaluation(c) => Some((c.check_name.clone(), c.passed)),
            _ => None,
        })
        .collect();
    assert_eq!(checks.len(), 2, "{checks:?}");
    assert!(checks.iter().all(|(_, passed)| *passed), "{checks:?}");
    let wh = Warehouse::open(&location, "main").await.expect("open");
    assert_eq!(
        rows(&wh, "select day, revenue from revenue order by day").await,
        ["2024-01-01|15", "2024-01-02|7"]
    );
    // A partitioned model is built per partition with the partition's variables.
    let result = crate::support::materialize_with(
        Definitions::new().assets(partitioned),
        &storage.storage,
        "main/daily_orders",
        rainbow_engine::RunOptions {
            partitions: vec!["2024-01-02".into()],
            ..Default::default()
        },
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    assert!(result.success(), "{result:?}");
    let wh = Warehouse::open(&location, "main").await.expect("open");
    assert_eq!(
        rows(&wh, "select n, day from daily_orders").await,
        ["1|2024-01-02"]
    );
}

#[test]
fn profiles_pick_the_schema_and_check_bigquery_targets() {
    let dir = shop();
    let r = dir.path();
    let bin = env!("CARGO_BIN_EXE_rainbow");
    write(
        r,
        "profiles.yml",
        "shop:\n  target: local\n  outputs:\n    local:\n      type: duckdb\n      path: shop.duckdb\n      schema: analytics\n    prod:\n      type: bigquery\n      dataset: analytics\n",
    );
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--project-dir", r.to_str().expect("utf-8")];
        args.extend_from_slice(extra);
        std::process::Command::new(bin)
            .args(&args)
            .env("RAINBOW_HOME", r.join("home"))
            .output()
            .expect("runs")
    };
    let out = build(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(bin)
        .args([
            "query",
            "select count(*) from analytics.events_by_kind",
            "--format",
            "csv",
        ])
        .env("RAINBOW_HOME", r.join("home"))
        .output()
        .expect("runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "count(*)\n2\n");
    let out = build(&["--target", "prod"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("profiles.yml: target `prod`: a BigQuery target needs `project:`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = build(&["--target", "staging"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no output `staging` (outputs: local, prod)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A process killed while it replaces a table leaves the previous version readable (or, if it
/// got to commit first, the complete new one): never a partial table.
#[test]
fn a_process_killed_mid_write_leaves_a_whole_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let bin = env!("CARGO_BIN_EXE_rainbow");
    let query = |sql: &str| {
        std::process::Command::new(bin)
            .args(["query", sql, "--format", "csv"])
            .env("RAINBOW_HOME", &home)
            .output()
            .expect("runs")
    };
    let out = query("CREATE TABLE main.t AS SELECT * FROM UNNEST(GENERATE_ARRAY(1, 1000)) AS id");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = std::process::Command::new(bin)
        .args([
            "query",
            "CREATE OR REPLACE TABLE main.t AS SELECT id, md5(CAST(id AS STRING)) AS h FROM UNNEST(GENERATE_ARRAY(1, 30000000)) AS id",
        ])
        .env("RAINBOW_HOME", &home)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawns");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let finished_first = child.try_wait().expect("wait").is_some();
    let _ = child.kill();
    let _ = child.wait();
    let out = query("SELECT COUNT(*), MIN(id), MAX(id) FROM main.t");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    if finished_first {
        assert_eq!(got, "30000000,1,30000000");
    } else {
        assert_eq!(got, "1000,1,1000", "the killed write must not be visible");
    }
}

/// `rainbow build` is one engine run: `rainbow runs` lists it, `runs show` has one step per node
/// and every test as a check evaluation; one compilation per run (`run_started_at` is the same
/// in every model); a test reading two unrelated models runs after both; exit codes 0/1/2.
#[test]
fn cli_build_is_one_recorded_run_with_a_step_per_node_and_tests_as_checks() {
    let dir = shop();
    let r = dir.path();
    write(
        r,
        "models/started_a.sql",
        "select '{{ run_started_at }}' as started",
    );
    write(
        r,
        "models/started_b.sql",
        "select '{{ run_started_at }}' as started",
    );
    // Reads two models that do not depend on each other.
    write(
        r,
        "tests/same_start.sql",
        "select * from {{ ref('started_a') }} a full outer join {{ ref('started_b') }} b on a.started = b.started where a.started is null or b.started is null",
    );
    let bin = env!("CARGO_BIN_EXE_rainbow");
    // dbt's commands take the project; the engine's (`runs`) do not.
    let rainbow = |args: &[&str]| {
        let dbt = ["build", "run", "test", "query"].contains(&args[0]);
        let mut c = std::process::Command::new(bin);
        c.args(args);
        if dbt {
            c.args(["--project-dir", r.to_str().expect("utf-8")]);
        }
        c.env("RAINBOW_HOME", r.join("home"))
            .output()
            .expect("runs")
    };
    let out = rainbow(&["build", "--threads", "4"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASS  test same_start"), "{stdout}");

    let out = rainbow(&["runs", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("runs JSON");
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    assert_eq!(runs[0]["status"], "SUCCESS");
    assert_eq!(runs[0]["tags"]["rainbow/command"], "build");
    let listed = rainbow(&["runs"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("build: *"),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    let run_id = runs[0]["run_id"].as_str().expect("run id").to_owned();
    let out = rainbow(&["runs", "show", &run_id, "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run JSON");
    let events = shown["events"].as_array().expect("events");
    let of_kind = |kind: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|e| e["data"]["kind"] == kind)
            .collect()
    };
    // seed events; models stg_events, events_by_kind, inc_*, eph, uses_eph, started_a/b.
    let mut steps: Vec<&str> = of_kind("step_succeeded")
        .iter()
        .filter_map(|e| e["step_key"].as_str())
        .collect();
    steps.sort();
    assert_eq!(
        steps,
        [
            "main/eph",
            "main/events",
            "main/events_by_kind",
            "main/inc_append",
            "main/inc_delete_insert",
            "main/inc_merge",
            "main/started_a",
            "main/started_b",
            "main/uses_eph",
            "main_staging/stg_events"
        ]
    );
    let mut checks: Vec<&str> = of_kind("check_evaluation")
        .iter()
        .filter_map(|e| e["data"]["check_name"].as_str())
        .collect();
    checks.sort();
    assert_eq!(
        checks,
        [
            "accepted_values_inc_merge_kind",
            "no_negative_amounts",
            "not_null_events_by_kind_kind",
            "relationships_inc_merge_id",
            "same_start",
            "unique_events_by_kind_kind",
            "unique_inc_merge_id"
        ]
    );
    // Row counts recorded with each table: from the write itself, or counted after a merge.
    let rows_of = |key: &str| -> Option<i64> {
        events
            .iter()
            .find(|e| e["data"]["kind"] == "materialization" && e["asset_key"] == key)
            .and_then(|e| e["data"]["metadata"]["row_count"]["value"].as_i64())
    };
    assert_eq!(rows_of("main/events"), Some(3));
    assert_eq!(rows_of("main/events_by_kind"), Some(2));
    assert_eq!(rows_of("main/inc_merge"), Some(3));
    assert_eq!(
        rows_of("main_staging/stg_events"),
        None,
        "a view has no row count"
    );
    // `same_start` ran once both models it reads were built.
    let position = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        events.iter().position(pred).expect("event present")
    };
    let check_at = position(&|e| e["data"]["check_name"] == "same_start");
    for model in ["main/started_a", "main/started_b"] {
        let built = position(&|e| e["data"]["kind"] == "step_succeeded" && e["step_key"] == model);
        let checked_step = events[check_at]["step_key"].as_str().unwrap_or_default();
        assert!(
            built < check_at || checked_step == model,
            "`same_start` ran before {model} was built"
        );
    }

    // SQL is never read as a flag.
    let out = rainbow(&["query", "-- a comment\nselect 1 as one", "--format", "csv"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\n1\n");
    // A failing test is exit 1; bad input is exit 2.
    write(
        r,
        "tests/always_fails.sql",
        "select * from {{ ref('events') }} where id > 0",
    );
    let out = rainbow(&["test", "--select", "always_fails"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = rainbow(&["test", "--select", "test_name:unique"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A test that reads nothing cannot be a check on anything: named, not dropped.
    write(r, "tests/reads_nothing.sql", "select 1 as bad");
    let out = rainbow(&["build"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("test `reads_nothing` reads no model, seed, snapshot or source"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(r.join("tests/reads_nothing.sql")).expect("remove");
    // `--retries`: a failing model is retried (recorded), then the run fails.
    write(r, "models/broken.sql", "select * from no_such_table");
    let out = rainbow(&["run", "--select", "broken", "--retries", "1"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = rainbow(&["runs", "--json", "--limit", "1"]);
    let last: serde_json::Value = serde_json::from_slice(&out.stdout).expect("runs JSON");
    let id = last[0]["run_id"].as_str().expect("run id").to_owned();
    let out = rainbow(&["runs", "show", &id, "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run JSON");
    let kinds: Vec<&str> = shown["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["data"]["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"step_up_for_retry"), "{kinds:?}");
    std::fs::remove_file(r.join("models/broken.sql")).expect("remove");
    let out = rainbow(&["run", "--select", "no_such_model"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown asset `no_such_model`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// dbt behaviours the new-user trial found missing, each once: hooks are Jinja rendered with
/// the node (`{{ this }}`), `merge_update_columns` / `merge_exclude_columns` keep the other
/// columns of matched rows, a test's `warn_if` / `error_if` / `fail_calc` decide its status,
/// YAML snapshots (`snapshots: [{name, relation}]`) are built, and a unit test's
/// `overrides.env_vars` reach `env_var()`.
#[tokio::test]
async fn hooks_merge_columns_test_thresholds_yaml_snapshots_and_env_overrides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    write(r, "dbt_project.yml", PROJECT);
    write(
        r,
        "models/sources.yml",
        "version: 2\nsources:\n  - name: raw\n    tables:\n      - name: src\n",
    );
    write(
        r,
        "models/logged.sql",
        "{{ config(post_hook=\"insert into main.hook_log select '{{ this.identifier }}' as ev\") }}\nselect 1 as id",
    );
    write(
        r,
        "models/upd.sql",
        "{{ config(materialized='incremental', unique_key='id', merge_update_columns=['a']) }}\nselect id, a, b from {{ source('raw', 'src') }}",
    );
    write(
        r,
        "models/excl.sql",
        "{{ config(materialized='incremental', unique_key='id', merge_exclude_columns=['b']) }}\nselect id, a, b from {{ source('raw', 'src') }}",
    );
    write(
        r,
        "models/envy.sql",
        "select '{{ env_var('RAINBOW_TEST_UNSET_ENV', 'dflt') }}' as e, id from {{ source('raw', 'src') }}",
    );
    write(
        r,
        "models/schema.yml",
        "version: 2\nmodels:\n  - name: upd\n    columns:\n      - name: id\n        data_tests:\n          - accepted_values:\n              values: [1]\n              config:\n                severity: error\n                warn_if: '>= 1'\n                error_if: '> 5'\n      - name: a\n        data_tests:\n          - not_null:\n              config:\n                fail_calc: 'sum(case when a < 0 then 1 else 0 end)'\nsnapshots:\n  - name: src_snapshot\n    relation: source('raw', 'src')\n    config:\n      target_schema: snapshots\n      unique_key: id\n      strategy: check\n      check_cols: all\nunit_tests:\n  - name: env_override\n    model: envy\n    overrides:\n      env_vars: {RAINBOW_TEST_UNSET_ENV: fromtest}\n    given:\n      - input: source('raw', 'src')\n        rows: [{id: 1}]\n    expect:\n      rows: [{e: fromtest, id: 1}]\n",
    );
    let wh = warehouse(r).await;
    wh.execute("CREATE TABLE main.hook_log AS SELECT 'start' AS ev", "log")
        .await
        .expect("log");
    wh.execute(
        "CREATE TABLE raw.src AS SELECT 1 AS id, 10 AS a, 100 AS b UNION ALL SELECT 2, 20, 200",
        "src",
    )
    .await
    .expect("src");
    let s = run(r, &wh, Verb::Build, &RunOptions::default()).await;
    assert!(
        failures(&s).iter().all(|f| f.contains("Warn")),
        "{:?}",
        failures(&s)
    );
    wh.execute(
        "CREATE OR REPLACE TABLE raw.src AS SELECT 1 AS id, 11 AS a, 101 AS b UNION ALL SELECT 2, 21, 201",
        "src",
    )
    .await
    .expect("src");
    let s = run(r, &wh, Verb::Build, &RunOptions::default()).await;
    let by_name = |name: &str| {
        s.results
            .iter()
            .find(|x| x.name == name)
            .map(|x| (x.status, x.message.clone()))
            .unwrap_or_else(|| panic!("{name} in {:?}", s.results))
    };
    // One value (2) is not accepted: warn_if `>= 1` warns, error_if `> 5` does not fail.
    assert_eq!(by_name("accepted_values_upd_id").0, Status::Warn);
    // fail_calc counts negative `a` only: none, so not_null passes.
    assert_eq!(by_name("not_null_upd_a").0, Status::Pass);
    assert_eq!(
        by_name("env_override").0,
        Status::Pass,
        "{:?}",
        by_name("env_override")
    );
    assert_eq!(
        rows(&wh, "select ev from main.hook_log order by ev").await,
        ["logged", "logged", "start"]
    );
    assert_eq!(
        rows(&wh, "select id, a, b from upd order by id").await,
        ["1|11|100", "2|21|200"]
    );
    assert_eq!(
        rows(&wh, "select id, a, b from excl order by id").await,
        ["1|11|100", "2|21|200"]
    );
    assert_eq!(
        rows(&wh, "select count(*) from snapshots.src_snapshot").await,
        ["4"]
    );
}

/// A snapshot's source gains a column (added to the snapshot, NULL in older versions), then
/// loses one (kept, NULL in newer versions) — as dbt does; a unit test expecting no rows, and a
/// blank CSV cell as NULL.
#[tokio::test]
async fn snapshots_follow_source_columns_and_unit_tests_expect_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    write(r, "dbt_project.yml", PROJECT);
    write(
        r,
        "models/sources.yml",
        "version: 2\nsources:\n  - name: raw\n    tables:\n      - name: items\n",
    );
    write(
        r,
        "snapshots/items.sql",
        "{% snapshot items_snapshot %}\n{{ config(target_schema='snapshots', unique_key='id', strategy='check', check_cols='all') }}\nselect * from {{ source('raw', 'items') }}\n{% endsnapshot %}\n",
    );
    write(
        r,
        "models/positive.sql",
        "select id, extra from {{ source('raw', 'items') }} where id > 0",
    );
    write(
        r,
        "models/schema.yml",
        "version: 2\nunit_tests:\n  - name: nothing_negative\n    model: positive\n    given:\n      - input: source('raw', 'items')\n        format: csv\n        rows: |\n          id,extra\n          -1,\n    expect:\n      rows: []\n",
    );
    let wh = warehouse(r).await;
    let steps = [
        "SELECT 1 AS id, 'a' AS v",
        "SELECT 1 AS id, 'a' AS v, 'x' AS extra",
        "SELECT 1 AS id, 'x' AS extra",
    ];
    for (i, step) in steps.iter().enumerate() {
        let at = format!("2024-03-0{}T00:00:00Z", i + 1);
        snapshot_items(r, &wh, step, &at, i + 1).await;
    }
    assert_eq!(
        rows(&wh, "select id, v, extra, format_timestamp('%d', dbt_valid_from), coalesce(format_timestamp('%d', dbt_valid_to), 'open') from snapshots.items_snapshot order by dbt_valid_from").await,
        ["1|a|NULL|01|02", "1|a|x|02|03", "1|NULL|x|03|open"]
    );
    let s = run(
        r,
        &wh,
        Verb::Build,
        &RunOptions {
            select: vec!["positive".into()],
            ..Default::default()
        },
    )
    .await;
    assert!(failures(&s).is_empty(), "{:?}", failures(&s));
    assert!(
        s.results
            .iter()
            .any(|x| x.name == "nothing_negative" && x.status == Status::Pass),
        "{:?}",
        s.results
    );
}

/// What the second new-user trial found silently different from dbt, each once: a source
/// table's `identifier:`, `full_refresh: false` protecting a table from `--full-refresh`,
/// `flags.FULL_REFRESH`, seed `column_types` applied before inference (a zip code keeps its
/// leading zero), the check strategy's `updated_at`, and property files under `tests/`.
#[tokio::test]
async fn source_identifiers_full_refresh_seed_types_check_updated_at_and_test_dir_yaml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    write(r, "dbt_project.yml", PROJECT);
    write(
        r,
        "models/sources.yml",
        "version: 2\nsources:\n  - name: shop\n    schema: raw\n    tables:\n      - name: orders\n        identifier: raw_orders_v2\n        columns:\n          - name: id\n            data_tests: [unique, not_null]\n",
    );
    write(
        r,
        "models/from_source.sql",
        "select id from {{ source('shop', 'orders') }}",
    );
    // A relation's parts are names, as in dbt (rendered again once every name is known).
    write(
        r,
        "models/rel_parts.sql",
        "select {{ 1 if this.identifier == 'rel_parts' else 0 }} as same, {{ this.name | length }} as len, '{{ ref('from_source').schema }}' as s, '{{ this.name[:3] }}' as pre",
    );
    write(
        r,
        "models/kept.sql",
        "{{ config(materialized='incremental', full_refresh=false) }}\nselect id, {{ flags.FULL_REFRESH }} as fr from {{ source('shop', 'orders') }}\n{% if is_incremental() %}where id > (select max(id) from {{ this }}){% endif %}",
    );
    write(r, "seeds/zips.csv", "zip,n\n01234,1\n98765,2\n");
    write(
        r,
        "seeds/properties.yml",
        "version: 2\nseeds:\n  - name: zips\n    config:\n      column_types:\n        zip: string\n",
    );
    write(
        r,
        "snapshots/orders.sql",
        "{% snapshot orders_snapshot %}\n{{ config(target_schema='snapshots', unique_key='id', strategy='check', check_cols=['id'], updated_at='u') }}\nselect id, u from {{ source('shop', 'orders') }}\n{% endsnapshot %}\n",
    );
    write(
        r,
        "tests/properties.yml",
        "version: 2\nmodels:\n  - name: from_source\n    columns:\n      - name: id\n        data_tests: [unique]\n",
    );
    let wh = warehouse(r).await;
    wh.execute(
        "CREATE TABLE raw.orders AS SELECT 100 AS id, TIMESTAMP '2020-01-01 00:00:00' AS u",
        "decoy",
    )
    .await
    .expect("decoy");
    wh.execute(
        "CREATE TABLE raw.raw_orders_v2 AS SELECT 1 AS id, TIMESTAMP '2024-05-01 00:00:00' AS u UNION ALL SELECT 2, TIMESTAMP '2024-05-02 00:00:00'",
        "orders",
    )
    .await
    .expect("orders");
    let s = run(r, &wh, Verb::Build, &RunOptions::default()).await;
    assert!(failures(&s).is_empty(), "{:?}", failures(&s));
    assert!(
        s.results.iter().any(|x| x.name == "unique_from_source_id"),
        "{:?}",
        s.results
    );
    // Tests on a source's columns run, named as dbt names them.
    assert!(
        s.results
            .iter()
            .any(|x| x.name == "source_unique_shop_orders_id" && x.status == Status::Pass),
        "{:?}",
        s.results
    );
    assert_eq!(rows(&wh, "select * from rel_parts").await, ["1|9|main|rel"]);
    assert_eq!(
        rows(&wh, "select id from from_source order by id").await,
        ["1", "2"]
    );
    assert_eq!(
        rows(&wh, "select zip from zips order by n").await,
        ["01234", "98765"]
    );
    assert_eq!(
        rows(&wh, "select id, format_timestamp('%F', dbt_valid_from) from snapshots.orders_snapshot order by id").await,
        ["1|2024-05-01", "2|2024-05-02"]
    );
    wh.execute(
        "INSERT INTO raw.raw_orders_v2 SELECT 3, TIMESTAMP '2024-05-03 00:00:00'",
        "more",
    )
    .await
    .expect("more");
    let full = RunOptions {
        full_refresh: true,
        select: vec!["kept".into()],
        ..Default::default()
    };
    let s = run(r, &wh, Verb::Run, &full).await;
    assert!(failures(&s).is_empty(), "{:?}", failures(&s));
    // Not rebuilt: the earlier rows stay, the new one is appended, and the flag was seen.
    assert_eq!(
        rows(&wh, "select id, fr from kept order by id").await,
        ["1|false", "2|false", "3|true"]
    );
}

/// A model contract (`contract: {enforced: true}`): the model builds when its columns are the
/// schema file's, with their data types; otherwise the build fails naming each difference and
/// nothing is written.
#[tokio::test]
async fn model_contracts_are_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    write(r, "dbt_project.yml", PROJECT);
    write(
        r,
        "models/contracted.sql",
        "{{ config(contract={'enforced': true}) }}\nselect 1 as id, 'a' as name",
    );
    let schema = |name_type: &str| {
        format!(
            "version: 2\nmodels:\n  - name: contracted\n    columns:\n      - name: id\n        data_type: integer\n      - name: name\n        data_type: {name_type}\n"
        )
    };
    write(r, "models/schema.yml", &schema("string"));
    let wh = warehouse(r).await;
    let s = run(r, &wh, Verb::Run, &RunOptions::default()).await;
    assert!(failures(&s).is_empty(), "{:?}", failures(&s));
    write(r, "models/schema.yml", &schema("int64"));
    write(
        r,
        "models/contracted.sql",
        "{{ config(contract={'enforced': true}) }}\nselect 2 as id, 'b' as name, 3 as extra",
    );
    let s = run(r, &wh, Verb::Run, &RunOptions::default()).await;
    let f = failures(&s).join("\n");
    assert!(
        f.contains("`name` is STRING, the contract says int64"),
        "{f}"
    );
    assert!(f.contains("`extra` is not in the contract"), "{f}");
    assert_eq!(rows(&wh, "select id, name from contracted").await, ["1|a"]);
}

/// A test's own `name:`, `limit:` (the failing rows counted are capped) and
/// `store_failures` (its failing rows kept in `<schema>_dbt_test__audit`), as dbt's.
#[tokio::test]
async fn tests_take_their_own_name_and_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    write(r, "dbt_project.yml", PROJECT);
    write(
        r,
        "models/nulls.sql",
        "select cast(null as int64) as v union all select null union all select null",
    );
    write(
        r,
        "models/schema.yml",
        "version: 2\nmodels:\n  - name: nulls\n    columns:\n      - name: v\n        data_tests:\n          - not_null:\n              name: v_is_set\n              config:\n                limit: 1\n                severity: warn\n                store_failures: true\n",
    );
    let wh = warehouse(r).await;
    let s = run(r, &wh, Verb::Build, &RunOptions::default()).await;
    let test = s
        .results
        .iter()
        .find(|x| x.name == "v_is_set")
        .unwrap_or_else(|| panic!("{:?}", s.results));
    assert_eq!(
        (test.status, test.message.as_str()),
        (Status::Warn, "Got 1 failing row(s)")
    );
    // store_failures: the failing rows kept in the audit schema under the test's name.
    assert_eq!(
        rows(
            &wh,
            "select count(*), count(v) from main_dbt_test__audit.v_is_set"
        )
        .await,
        ["1|0"]
    );
}
