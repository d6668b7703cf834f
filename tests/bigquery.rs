//! The BigQuery target on a real BigQuery API: bqemulator (PyPI, started by scripts/test.sh;
//! `RAINBOW_TEST_BIGQUERY_ENDPOINT`). dbt-labs/jaffle-shop seeds and builds there unmodified
//! and its marts equal, row for row, the same project built on the embedded warehouse;
//! incremental strategies (merge, append, insert_overwrite on a partitioned table) replace
//! exactly what they should; job ids and bytes are recorded; bad targets and SQL BigQuery
//! rejects fail naming the model, the job, the setting.

use std::path::Path;

use serde_json::Value as Json;

use crate::dbt_packages::{assert_same_rows, copy_dir, rainbow, write};

fn endpoint() -> String {
    std::env::var("RAINBOW_TEST_BIGQUERY_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "RAINBOW_TEST_BIGQUERY_ENDPOINT is not set: run the suite with scripts/test.sh, which \
             installs and starts the BigQuery emulator (bqemulator from PyPI)"
        )
    })
}

/// A `profiles.yml` for profile `profile` with a BigQuery target `bq` (dataset `dataset`, on
/// the emulator) plus `extra` lines of settings.
fn bigquery_profile(dir: &Path, profile: &str, dataset: &str, extra: &str) {
    write(
        dir,
        "profiles/profiles.yml",
        &format!(
            "{profile}:\n  target: bq\n  outputs:\n    bq:\n      type: bigquery\n      method: oauth\n      project: rainbow-test\n      dataset: {dataset}\n      api_endpoint: {}\n{extra}",
            endpoint()
        ),
    );
}

/// `rainbow query … --format json` rows.
fn query(dir: &Path, extra: &[&str], sql: &str) -> Vec<Json> {
    let mut args = vec!["query", sql, "--format", "json"];
    args.extend_from_slice(extra);
    let (ok, out) = rainbow(dir, &args);
    assert!(ok, "{sql}: {out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{sql}: {e}: {out}"))
}

#[test]
fn jaffle_shop_builds_on_bigquery_like_the_embedded_warehouse() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jaffle-shop");
    let dir = tempfile::tempdir().expect("tempdir");
    let (embedded, bq) = (dir.path().join("embedded"), dir.path().join("bq"));
    copy_dir(&fixture, &embedded);
    copy_dir(&fixture, &bq);
    let dataset = format!("jaffle_{}", std::process::id());
    bigquery_profile(&bq, "default", &dataset, "");
    let on_bq = ["--profiles-dir", "profiles"];
    let vars = ["--vars", "{\"load_source_data\": true}"];

    for (project, target) in [(&embedded, &[][..]), (&bq, &on_bq[..])] {
        let (ok, out) = rainbow(project, &[&["seed"][..], &vars, target].concat());
        assert!(ok, "{out}");
        assert!(
            out.contains("Done. PASS=6 WARN=0 ERROR=0 SKIP=0 TOTAL=6"),
            "{out}"
        );
    }
    let (ok, out) = rainbow(&embedded, &["build"]);
    assert!(ok, "{out}");
    let (ok, out) = rainbow(&bq, &[&["build"][..], &on_bq].concat());
    assert!(ok, "{out}");
    // Every model, data test and unit test on BigQuery: dbt's count for this project.
    assert!(
        out.contains("Done. PASS=43 WARN=0 ERROR=0 SKIP=0 TOTAL=43"),
        "{out}"
    );
    assert_eq!(out.matches("PASS  unit_test").count(), 3, "{out}");
    assert!(out.contains(&format!("model {dataset}.customers")), "{out}");

    for model in [
        "customers",
        "locations",
        "order_items",
        "orders",
        "products",
        "supplies",
    ] {
        let sql = format!("select * from {model}");
        let expected = query(&embedded, &[], &sql);
        let actual = query(&bq, &on_bq, &sql);
        assert_same_rows(model, &actual, &expected);
    }

    // `rainbow plan`: a dry run per model (the emulator reports 0 bytes; BigQuery its
    // estimate), nothing built or billed; on the embedded target it is refused.
    let (ok, plan) = rainbow(&bq, &[&["plan"][..], &on_bq].concat());
    assert!(ok, "{plan}");
    assert_eq!(
        plan.lines()
            .filter(|l| l.starts_with(&format!("{dataset}.")))
            .count(),
        13,
        "{plan}"
    );
    assert!(plan.lines().any(|l| l.starts_with("TOTAL")), "{plan}");
    let (ok, refused) = rainbow(&embedded, &["plan"]);
    assert!(
        !ok && refused.contains("the embedded warehouse"),
        "{refused}"
    );
    // `rainbow compile`: BigQuery SQL as it runs, relations as `project.dataset.table`.
    let (ok, compile_out) = rainbow(&bq, &[&["compile"][..], &on_bq].concat());
    assert!(ok, "{compile_out}");
    let compiled =
        std::fs::read_to_string(bq.join("target/compiled/jaffle_shop/models/marts/customers.sql"))
            .expect("compiled customers");
    assert!(
        compiled.contains(&format!("`rainbow-test.{dataset}.stg_customers`")),
        "{compiled}"
    );

    // The run records each model's BigQuery jobs and what they scanned.
    let run_id = out
        .split("(run ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no run id: {out}"))
        .to_owned();
    let (ok, shown) = rainbow(&bq, &["runs", "show", &run_id]);
    assert!(ok, "{shown}");
    let customers: Vec<&str> = shown
        .lines()
        .filter(|l| l.starts_with(&format!("{dataset}/customers ")))
        .collect();
    assert!(
        customers
            .iter()
            .any(|l| l.contains("bigquery_job_ids") && l.contains("rainbow_")),
        "{shown}"
    );
    assert!(
        customers.iter().any(|l| l.contains("bytes_billed")),
        "{shown}"
    );
    assert!(
        customers
            .iter()
            .any(|l| l.contains("relation") && l.contains("`rainbow-test.")),
        "{shown}"
    );
}

/// merge (unique_key), append, and insert_overwrite (dynamic and static partitions) on
/// partitioned and clustered tables: a second run with new source rows changes exactly the
/// keys and partitions it should; `--full-refresh` rebuilds.
#[test]
fn incremental_strategies_on_bigquery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    let dataset = format!("inc_{}", std::process::id());
    write(p, "dbt_project.yml", "name: inc\nprofile: inc\n");
    bigquery_profile(p, "inc", &dataset, "");
    // Run 1: 2024-01-01 (k 1, 2) and 2024-01-02 (k 3). Run 2 (`second`): k 2 changed on
    // 2024-01-01, k 3 gone and k 4 new on 2024-01-02.
    write(
        p,
        "models/src.sql",
        "{{ config(materialized='table') }}\n{% if var('second', false) %}\nselect date '2024-01-01' as d, 2 as k, 20 as v\nunion all select date '2024-01-02', 4, 40\n{% else %}\nselect date '2024-01-01' as d, 1 as k, 1 as v\nunion all select date '2024-01-01', 2, 2\nunion all select date '2024-01-02', 3, 3\n{% endif %}\n",
    );
    let partitioned = "partition_by={'field': 'd', 'data_type': 'date'}, cluster_by=['k']";
    write(
        p,
        "models/merged.sql",
        &format!(
            "{{{{ config(materialized='incremental', unique_key='k', {partitioned}) }}}}\nselect * from {{{{ ref('src') }}}}\n"
        ),
    );
    write(
        p,
        "models/appended.sql",
        "{{ config(materialized='incremental', incremental_strategy='append') }}\nselect * from {{ ref('src') }}\n",
    );
    write(
        p,
        "models/overwritten.sql",
        &format!(
            "{{{{ config(materialized='incremental', incremental_strategy='insert_overwrite', {partitioned}) }}}}\nselect * from {{{{ ref('src') }}}}\n"
        ),
    );
    write(
        p,
        "models/overwritten_static.sql",
        &format!(
            "{{{{ config(materialized='incremental', incremental_strategy='insert_overwrite', partitions=[\"date '2024-01-02'\"], {partitioned}) }}}}\nselect * from {{{{ ref('src') }}}}\n"
        ),
    );
    let on_bq = ["--profiles-dir", "profiles"];
    let (ok, out) = rainbow(p, &[&["run"][..], &on_bq].concat());
    assert!(ok, "{out}");
    assert!(
        out.contains("Done. PASS=5 WARN=0 ERROR=0 SKIP=0 TOTAL=5"),
        "{out}"
    );
    let (ok, out) = rainbow(
        p,
        &[&["run", "--vars", "{second: true}"][..], &on_bq].concat(),
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("MERGE") && out.contains("APPEND") && out.contains("INSERT_OVERWRITE"),
        "{out}"
    );
    let rows = |model: &str| -> Vec<String> {
        query(
            p,
            &on_bq,
            &format!("select cast(d as string) as d, k, v from {model} order by k, v"),
        )
        .iter()
        .map(|r| format!("{} {} {}", r["d"].as_str().unwrap_or("?"), r["k"], r["v"]))
        .collect()
    };
    // merge: k 2 updated, k 4 inserted, k 1 and k 3 kept.
    assert_eq!(
        rows("merged"),
        [
            "2024-01-01 1 1",
            "2024-01-01 2 20",
            "2024-01-02 3 3",
            "2024-01-02 4 40"
        ]
    );
    // append: both runs' rows.
    assert_eq!(rows("appended").len(), 5);
    // insert_overwrite (dynamic): both partitions of the new rows replaced whole — k 1 gone
    // with 2024-01-01, k 3 with 2024-01-02.
    assert_eq!(rows("overwritten"), ["2024-01-01 2 20", "2024-01-02 4 40"]);
    // insert_overwrite (static 2024-01-02): that partition replaced; 2024-01-01 keeps its
    // old rows and gains the new row (dbt-bigquery's static mode inserts every new row).
    assert_eq!(
        rows("overwritten_static"),
        [
            "2024-01-01 1 1",
            "2024-01-01 2 2",
            "2024-01-01 2 20",
            "2024-01-02 4 40"
        ]
    );
    // --full-refresh: rebuilt from the source as it is now.
    let (ok, out) = rainbow(
        p,
        &[
            &[
                "run",
                "--full-refresh",
                "--vars",
                "{second: true}",
                "-s",
                "appended",
            ][..],
            &on_bq,
        ]
        .concat(),
    );
    assert!(ok, "{out}");
    assert_eq!(rows("appended"), ["2024-01-01 2 20", "2024-01-02 4 40"]);
}

/// What a user gets wrong: SQL BigQuery rejects, an unreachable endpoint, a keyfile that is
/// missing or not a key, a bad setting, an unsupported strategy — each names the model or the
/// setting, and nothing else of the run is touched.
#[test]
fn bigquery_errors_name_the_model_job_and_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    let dataset = format!("bad_{}", std::process::id());
    write(p, "dbt_project.yml", "name: bad\nprofile: bad\n");
    write(p, "models/good.sql", "select 1 as id\n");
    write(
        p,
        "models/broken.sql",
        "{{ config(materialized='table') }}\n{# a keyword where a column should be #}\n\nselect id,\n  select\nfrom {{ ref('good') }}\n",
    );
    write(
        p,
        "models/wrong_strategy.sql",
        "{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key='id') }}\nselect 1 as id\n",
    );
    let on_bq = ["--profiles-dir", "profiles"];

    bigquery_profile(p, "bad", &dataset, "");
    let (ok, out) = rainbow(p, &[&["run"][..], &on_bq].concat());
    assert!(!ok, "{out}");
    assert!(
        out.contains("OK    model"),
        "the good model is built: {out}"
    );
    let broken = out
        .lines()
        .find(|l| l.starts_with("  Error in model broken"))
        .unwrap_or_else(|| panic!("{out}"));
    // BigQuery's position is put at the file's line: Jinja left the config and the comment
    // out of the compiled SQL, where the bad line is the second.
    assert!(
        broken.contains("models/broken.sql line 5 column 8 (compiled SQL line 2)"),
        "{broken}"
    );
    assert!(broken.contains("BigQuery job rainbow_"), "{broken}");
    assert!(broken.contains("Syntax error"), "{broken}");
    // A strategy BigQuery has no equivalent for is refused on the first build already (and by
    // `rainbow plan`), not only once the model is incremental.
    assert!(
        out.contains("models/wrong_strategy.sql: config `incremental_strategy`: `delete+insert` is not supported on a BigQuery target"),
        "{out}"
    );

    // An endpoint nothing listens on: the step fails naming the request.
    write(
        p,
        "profiles/profiles.yml",
        &format!(
            "bad:\n  target: bq\n  outputs:\n    bq:\n      type: bigquery\n      project: rainbow-test\n      dataset: {dataset}\n      api_endpoint: http://127.0.0.1:9\n"
        ),
    );
    let (ok, out) = rainbow(p, &[&["run", "-s", "good"][..], &on_bq].concat());
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("rainbow-test.{dataset}")), "{out}");
    assert!(
        out.contains("127.0.0.1:9") && out.contains("Connection refused"),
        "{out}"
    );

    // Keyfiles: missing, and not a service-account key.
    let keyfile = |file: &str| {
        format!(
            "bad:\n  target: bq\n  outputs:\n    bq:\n      type: bigquery\n      method: service-account\n      keyfile: {file}\n      project: rainbow-test\n      dataset: {dataset}\n"
        )
    };
    write(p, "profiles/profiles.yml", &keyfile("missing.json"));
    let (ok, out) = rainbow(p, &[&["run"][..], &on_bq].concat());
    assert!(!ok);
    assert!(out.contains("profiles/missing.json"), "{out}");
    write(p, "profiles/not-a-key.json", "{\"hello\": \"world\"}");
    write(p, "profiles/profiles.yml", &keyfile("not-a-key.json"));
    let (ok, out) = rainbow(p, &[&["run"][..], &on_bq].concat());
    assert!(!ok);
    assert!(
        out.contains("not-a-key.json: not a service-account key"),
        "{out}"
    );

    // A setting BigQuery targets do not have a value for.
    bigquery_profile(p, "bad", &dataset, "      maximum_bytes_billed: lots\n");
    let (ok, out) = rainbow(p, &[&["run"][..], &on_bq].concat());
    assert!(!ok);
    assert!(
        out.contains("target `bq`: `maximum_bytes_billed` must be a whole number"),
        "{out}"
    );
}

/// `rainbow demo` in `home` (its pipeline as `home/rainbow.toml` says): the printed analyses.
fn demo(home: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rainbow"))
        .args(["demo", "--days", "3", "--orders-per-day", "30", "--home"])
        .arg(home)
        .env_remove("RAINBOW_HOME")
        .env_remove("RAINBOW_DATABASE_URL")
        .output()
        .expect("run rainbow");
    crate::lake_s3::analyses(&out)
}

/// A serving export's rows as text (Arrow's table: values and their formatting).
fn export_rows(lake: &Path, view: &str) -> String {
    use rainbow_warehouse::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(lake.join(format!("serving/{view}/{view}.parquet")))
        .unwrap_or_else(|e| panic!("{view}: {e}"));
    let batches: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader")
        .collect::<Result<_, _>>()
        .expect("batches");
    rainbow_warehouse::datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .expect("format")
        .to_string()
}

/// The Rainbow batch layer with BigQuery as its warehouse: extract → lake (in the emulator's
/// Cloud Storage) → BigQuery `raw` (loaded partition by partition) → staging → SCD2
/// dimensions → fact_sales → the six views, exported to the lake. Every view equals, row for
/// row and type for type, the same run on the embedded warehouse; a second run loads nothing
/// again and changes nothing.
#[test]
fn the_batch_layer_on_bigquery_equals_the_embedded_one() {
    let gcs = std::env::var("RAINBOW_TEST_BIGQUERY_GCS_ROOT").unwrap_or_else(|_| {
        panic!("RAINBOW_TEST_BIGQUERY_GCS_ROOT is not set: run the suite with scripts/test.sh")
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let (embedded, bq) = (dir.path().join("embedded"), dir.path().join("bq"));
    let bucket = format!("rainbow-lake-{}", std::process::id());
    let lake = Path::new(&gcs).join(&bucket).join("lake");
    std::fs::create_dir_all(&bq).expect("home");
    bigquery_profile(&bq, "rainbow", "main", "");
    write(
        &bq,
        "rainbow.toml",
        &format!(
            "[pipeline]\nsource_url = \"sqlite://{}?mode=rwc\"\nlake = \"{}\"\nwarehouse = \"{}\"\nstart_date = \"2026-01-01\"\nend_date = \"2026-01-04\"\nprofiles_dir = \"{}\"\nbigquery_lake = \"gs://{bucket}/lake\"\n",
            bq.join("rainbow_db.sqlite").display(),
            lake.display(),
            bq.join("warehouse").display(),
            bq.join("profiles").display(),
        ),
    );
    let expected = demo(&embedded);
    let actual = demo(&bq);
    assert_eq!(actual, expected);
    assert!(
        !bq.join("warehouse").join("main_views").exists(),
        "nothing is built in the embedded warehouse"
    );
    for view in [
        "total_sales",
        "payment_method_distribution",
        "sales_by_day_of_week",
        "customer_ranking",
        "top_sellers",
        "top_profitable_products_by_category",
    ] {
        assert_eq!(
            export_rows(&lake, view),
            export_rows(&embedded.join("lake"), view),
            "{view}"
        );
    }
    // What BigQuery copied from the lake: 9 tables × 3 days, each once.
    write(&bq, "q/dbt_project.yml", "name: q\nprofile: rainbow\n");
    let profiles = bq.join("profiles");
    let on_bq = [
        "--project-dir",
        "q",
        "--profiles-dir",
        profiles.to_str().expect("utf-8"),
    ];
    let materialize_sql = || {
        let (ok, out) = rainbow(
            &bq,
            &[
                "materialize",
                "--select",
                "kind:sql",
                "--home",
                bq.to_str().expect("utf-8"),
            ],
        );
        assert!(ok, "{out}");
    };
    let loads = "select count(*) as n, count(distinct table_name) as tables, cast(max(loaded_at) as string) as last from raw._rainbow_lake_loads";
    let before = query(&bq, &on_bq, loads);
    assert_eq!(
        (before[0]["n"].as_i64(), before[0]["tables"].as_i64()),
        (Some(27), Some(9)),
        "{before:?}"
    );
    // Run again: every lake partition is loaded already (nothing copied again); the same
    // analyses.
    materialize_sql();
    assert_eq!(query(&bq, &on_bq, loads), before);
    assert_eq!(demo(&bq), expected);

    // A reprocessed day (its file rewritten, here with another day's rows): that partition,
    // and only it, is copied again.
    let payments = |day: &str| lake.join(format!("raw/payments/dt={day}/payments.parquet"));
    std::fs::copy(payments("2026-01-01"), payments("2026-01-02")).expect("rewrite a day");
    materialize_sql();
    let last = before[0]["last"].as_str().expect("last load");
    let reloaded = query(
        &bq,
        &on_bq,
        &format!(
            "select table_name, partition_value from raw._rainbow_lake_loads where cast(loaded_at as string) > '{last}'"
        ),
    );
    assert_eq!(
        reloaded,
        [serde_json::json!({"table_name": "payments", "partition_value": "2026-01-02"})]
    );
    let days = query(
        &bq,
        &on_bq,
        "select dt, count(*) as n from raw.payments group by dt order by dt",
    );
    assert_eq!(days[0]["n"], days[1]["n"], "{days:?}");

    // A day removed from the lake leaves BigQuery's table too (as it leaves the embedded
    // warehouse's external table).
    std::fs::remove_dir_all(lake.join("raw/payments/dt=2026-01-03")).expect("remove a day");
    materialize_sql();
    let days = query(
        &bq,
        &on_bq,
        "select dt, count(*) as n from raw.payments group by dt order by dt",
    );
    let days: Vec<&str> = days.iter().filter_map(|d| d["dt"].as_str()).collect();
    assert_eq!(days, ["2026-01-01", "2026-01-02"]);
}

/// Snapshots (SCD type 2) on BigQuery give the embedded warehouse's rows, version for version:
/// both strategies × the three `hard_deletes` modes, through deletes, restores and changes,
/// with the same snapshot times.
#[tokio::test(flavor = "multi_thread")]
async fn snapshots_on_bigquery_equal_the_embedded_ones() {
    use crate::support::{DbtOptions, dbt, dbt_on};
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path().join("project");
    let pid = std::process::id();
    // Datasets of their own: snapshots in `snaps_<pid>`, the source in `src_<pid>`.
    write(&r, "dbt_project.yml", "name: snaps\nprofile: snaps\n");
    write(
        &r,
        "models/sources.yml",
        &format!(
            "version: 2\nsources:\n  - name: raw\n    schema: src_{pid}\n    tables:\n      - name: items\n"
        ),
    );
    let mut names = Vec::new();
    for (s, strategy) in [
        ("ts", "strategy='timestamp', updated_at='u'"),
        ("ck", "strategy='check', check_cols='all'"),
    ] {
        for mode in ["ignore", "invalidate", "new_record"] {
            names.push(format!("{s}_{mode}"));
            write(
                &r,
                &format!("snapshots/{s}_{mode}.sql"),
                &format!(
                    "{{% snapshot {s}_{mode} %}}\n{{{{ config(target_schema='snaps_{pid}', unique_key='id', {strategy}, hard_deletes='{mode}') }}}}\nselect id, v, u from {{{{ source('raw', 'items') }}}}\n{{% endsnapshot %}}\n"
                ),
            );
        }
    }
    let wh = rainbow_warehouse::Warehouse::open(
        dir.path().join("warehouse").to_str().expect("utf-8"),
        "main",
    )
    .await
    .expect("warehouse");
    let target = rainbow_bigquery::BigQueryTarget::emulator(
        endpoint(),
        "rainbow-test",
        format!("main_{pid}"),
    );
    let bq = rainbow_bigquery::BigQuery::connect(target.clone())
        .await
        .expect("client");
    bq.ensure_dataset(&format!("src_{pid}"))
        .await
        .expect("dataset");
    let steps = crate::sql_models::hard_delete_steps();
    let on_bq = rainbow_dbt::SqlProject::new(&r, "unused").bigquery(target);
    for (i, step) in steps.iter().enumerate() {
        let options = DbtOptions {
            run_started_at: Some(
                chrono::DateTime::parse_from_rfc3339(&format!("2024-02-0{}T00:00:00Z", i + 1))
                    .expect("time")
                    .with_timezone(&chrono::Utc),
            ),
            ..Default::default()
        };
        wh.execute(
            &format!("CREATE OR REPLACE TABLE src_{pid}.items AS {step}"),
            "source",
        )
        .await
        .expect("embedded source");
        bq.run(
            &format!("CREATE OR REPLACE TABLE `rainbow-test.src_{pid}.items` AS {step}"),
            &rainbow_bigquery::JobOptions::default(),
        )
        .await
        .expect("BigQuery source");
        for (target, summary) in [
            (
                "embedded",
                dbt(&r, &wh, rainbow_dbt::Verb::Snapshot, &options).await,
            ),
            (
                "bigquery",
                dbt_on(on_bq.clone(), rainbow_dbt::Verb::Snapshot, &options).await,
            ),
        ] {
            let summary = summary.unwrap_or_else(|e| panic!("{target} step {i}: {e}"));
            assert!(
                summary.success(),
                "{target} step {i}: {:?}",
                summary.results
            );
        }
    }
    let embedded = rainbow_dbt::SqlProject::new(&r, wh.location().as_str());
    for name in &names {
        let deleted = if name.ends_with("new_record") {
            ", dbt_is_deleted"
        } else {
            ""
        };
        let sql = format!(
            "select id, v, format_timestamp('%F %T', u) as u, to_hex(dbt_scd_id) as scd, format_timestamp('%F %T', dbt_valid_from) as valid_from, coalesce(format_timestamp('%F %T', dbt_valid_to), 'open') as valid_to, format_timestamp('%F %T', dbt_updated_at) as updated{deleted} from snaps_{pid}.{name} order by id, valid_from, valid_to"
        );
        let text =
            |batches: &[rainbow_warehouse::datafusion::arrow::record_batch::RecordBatch]| {
                rainbow_warehouse::datafusion::arrow::util::pretty::pretty_format_batches(batches)
                    .expect("format")
                    .to_string()
            };
        let expected = text(&embedded.query(&sql, name).await.expect("embedded rows").1);
        let actual = text(&on_bq.query(&sql, name).await.expect("BigQuery rows").1);
        assert!(expected.lines().count() > 5, "{name}: {expected}");
        assert_eq!(actual, expected, "{name}");
    }
}

/// `on_schema_change` on BigQuery decides and evolves as on the embedded warehouse: the four
/// modes × a type change with a new and a gone column, a new and a gone column, a new column
/// only — the same builds refused, the same tables after the second run, value for value.
#[tokio::test(flavor = "multi_thread")]
async fn on_schema_change_on_bigquery_equals_the_embedded_warehouse() {
    use crate::support::{DbtOptions, dbt, dbt_on};
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path().join("project");
    let pid = std::process::id();
    write(&r, "dbt_project.yml", "name: osc\nprofile: osc\n");
    let variants = [
        // (name, the second run's query)
        ("retyped", "select 2 as id, 'y' as a, '20' as b, 'new' as c"),
        ("reshaped", "select 2 as id, 'y' as a, 20 as b, 'new' as c"),
        (
            "widened",
            "select 2 as id, 'y' as a, 20 as b, true as d, 'new' as c",
        ),
    ];
    let modes = ["ignore", "fail", "append_new_columns", "sync_all_columns"];
    for (variant, second) in variants {
        for mode in modes {
            write(
                &r,
                &format!("models/{variant}_{mode}.sql"),
                &format!(
                    "{{{{ config(materialized='incremental', unique_key='id', on_schema_change='{mode}') }}}}\n{{% if var('step', 1) == 1 %}}select 1 as id, 'x' as a, 10 as b, true as d{{% else %}}{second}{{% endif %}}\n"
                ),
            );
        }
    }
    let wh = rainbow_warehouse::Warehouse::open(
        dir.path().join("warehouse").to_str().expect("utf-8"),
        &format!("osc_{pid}"),
    )
    .await
    .expect("warehouse");
    let target = rainbow_bigquery::BigQueryTarget::emulator(
        endpoint(),
        "rainbow-test",
        format!("osc_{pid}"),
    );
    let on_bq = rainbow_dbt::SqlProject::new(&r, "unused").bigquery(target);
    let embedded = rainbow_dbt::SqlProject::new(&r, wh.location().as_str())
        .target_schema(format!("osc_{pid}"));
    let outcomes = |summary: rainbow_dbt::RunSummary| -> Vec<String> {
        let mut out: Vec<String> = summary
            .results
            .iter()
            .map(|n| format!("{} {:?}", n.name, n.status))
            .collect();
        for n in &summary.results {
            if n.status == rainbow_dbt::Status::Error {
                eprintln!("{}: {}", n.name, n.message);
            }
        }
        out.sort();
        out
    };
    for step in [1, 2] {
        let mut options = DbtOptions::default();
        options.vars.insert("step".into(), serde_json::json!(step));
        let expected = outcomes(
            dbt(&r, &wh, rainbow_dbt::Verb::Run, &options)
                .await
                .expect("embedded run"),
        );
        let actual = outcomes(
            dbt_on(on_bq.clone(), rainbow_dbt::Verb::Run, &options)
                .await
                .expect("BigQuery run"),
        );
        assert_eq!(actual, expected, "step {step}");
    }
    let text = |batches: &[rainbow_warehouse::datafusion::arrow::record_batch::RecordBatch]| {
        rainbow_warehouse::datafusion::arrow::util::pretty::pretty_format_batches(batches)
            .expect("format")
            .to_string()
    };
    let mut evolved = 0;
    for (variant, _) in variants {
        for mode in modes {
            let sql = format!("select * from osc_{pid}.{variant}_{mode} order by id");
            let expected = text(&embedded.query(&sql, mode).await.expect("embedded").1);
            let actual = text(&on_bq.query(&sql, mode).await.expect("BigQuery").1);
            assert_eq!(actual, expected, "{variant}_{mode}");
            evolved += usize::from(expected.contains("new"));
        }
    }
    // Evolved with the new column written: append (reshaped, widened), sync (all three).
    assert_eq!(evolved, 5);
}
