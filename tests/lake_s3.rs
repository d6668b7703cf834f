//! The lake on object storage (issue 14): the whole batch layer with its master dataset and
//! serving exports in S3 (moto's server, `RAINBOW_TEST_S3_ENDPOINT`, started by scripts/test.sh)
//! gives the same analyses as with a local lake; a second run writes nothing (every day is
//! written only if absent and found identical afterwards).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::ObjectStore;
use rainbow_assets::pipeline::{DEFAULT_START, PipelineSettings};

const RAINBOW: &str = env!("CARGO_BIN_EXE_rainbow");
const DAYS: u32 = 3;

fn endpoint() -> String {
    std::env::var("RAINBOW_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "RAINBOW_TEST_S3_ENDPOINT is not set: run the suite with scripts/test.sh, which starts \
             an S3 emulator (moto) from PyPI"
        )
    })
}

/// `rainbow demo` in `home` (the lake as its settings say); the printed analyses.
fn demo(home: &Path, endpoint: &str) -> String {
    let out = Command::new(RAINBOW)
        .args([
            "demo",
            "--days",
            &DAYS.to_string(),
            "--orders-per-day",
            "30",
        ])
        .arg("--home")
        .arg(home)
        .env_remove("RAINBOW_HOME")
        .env_remove("RAINBOW_DATABASE_URL")
        .env("AWS_ENDPOINT", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("run rainbow");
    analyses(&out)
}

/// The analyses a successful `rainbow demo` printed: from the first to the line before the
/// closing timing line.
pub(crate) fn analyses(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = stdout.find("\nTotal sales").expect("analyses printed");
    let end = stdout.rfind("\n\n").expect("closing line");
    stdout[start..end].to_owned()
}

fn s3(endpoint: &str, bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .build()
            .expect("s3 client"),
    )
}

/// Every object under `lake/`: path → e-tag.
async fn objects(store: &dyn ObjectStore) -> BTreeMap<String, String> {
    store
        .list(Some(&object_store::path::Path::from("lake")))
        .map_ok(|m| (m.location.to_string(), m.e_tag.unwrap_or_default()))
        .try_collect()
        .await
        .expect("list")
}

#[tokio::test]
async fn the_batch_layer_on_an_s3_lake_equals_the_local_one() {
    let endpoint = endpoint();
    let bucket = format!("rainbow-lake-{}", std::process::id());
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("create bucket");
    assert!(created.status().is_success(), "{created:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let (local, remote) = (dir.path().join("local"), dir.path().join("s3"));
    let start = NaiveDate::parse_from_str(DEFAULT_START, "%Y-%m-%d").expect("date");
    let mut settings = PipelineSettings::defaults(&remote);
    settings.lake = format!("s3://{bucket}/lake");
    settings.end_date = Some(start + chrono::Duration::days(i64::from(DAYS)));
    settings.save(&remote).expect("settings");

    let on_s3 = demo(&remote, &endpoint);
    let on_disk = demo(&local, &endpoint);
    assert_eq!(on_s3, on_disk, "the same analyses from both lakes");
    assert!(local.join("lake/raw").is_dir());
    assert!(
        !remote.join("lake").exists(),
        "nothing written to a local lake"
    );

    let store = s3(&endpoint, &bucket);
    let stored = objects(store.as_ref()).await;
    for table in rainbow_db::source::tables() {
        for day in 0..DAYS {
            let d = start + chrono::Duration::days(i64::from(day));
            let path = format!("lake/raw/{0}/dt={d}/{0}.parquet", table.name);
            assert!(stored.contains_key(&path), "{path} in {stored:?}");
        }
    }
    assert!(
        stored.keys().any(|k| k.starts_with("lake/serving/")),
        "serving exports beside the master dataset: {stored:?}"
    );

    // Again on the same state: the master dataset is found in place, nothing rewritten.
    let again = demo(&remote, &endpoint);
    assert_eq!(again, on_s3);
    let after = objects(store.as_ref()).await;
    let raw = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.iter()
            .filter(|(k, _)| k.starts_with("lake/raw/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(
        raw(&after),
        raw(&stored),
        "no day of the master dataset rewritten"
    );

    // What the extract's immutability rests on: a day is written only if absent, so a second
    // writer of the same day is refused by the store itself.
    let day = object_store::path::Path::from(format!("lake/raw/orders/dt={start}/orders.parquet"));
    let second = store
        .put_opts(
            &day,
            b"not parquet".to_vec().into(),
            object_store::PutMode::Create.into(),
        )
        .await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "{second:?}"
    );
    assert_eq!(
        objects(store.as_ref()).await,
        after,
        "the stored day untouched"
    );
}
