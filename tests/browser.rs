//! The UI in a real browser: Debian's chromium driven through chromedriver
//! (`RAINBOW_WEBDRIVER`, started by scripts/test.sh) with fantoccini. Screenshots of every
//! page visited are saved under `<target>/tmp/ui-screenshots/` as test artifacts.
//!
//! 1. The Rainbow pipeline after a small `rainbow demo`, served by `rainbow dev` (UI + daemon):
//!    the lineage, a backfill of three partitions launched from the dialog and watched to the
//!    end (htmx polling), a run's log, an asset page, the dashboard.
//! 2. In-process UI and daemon over definitions with a slow partitioned asset: a backfill
//!    canceled mid-way from its page; then the same dialog with JavaScript disabled (plain
//!    forms and redirects).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use rainbow_engine::daemon::{Daemon, DaemonOptions, SystemClock};
use rainbow_engine::prelude::*;
use rainbow_engine::{Executor, RainbowConfig};
use rainbow_web_ui::{UiOptions, UiState};
use tokio_util::sync::CancellationToken;

use crate::support::{Backend, fresh_storage};

const RAINBOW: &str = env!("CARGO_BIN_EXE_rainbow");

/// The chromedriver to use. Missing configuration fails loudly: the browser tests are part of
/// the contract, not optional.
fn webdriver() -> String {
    std::env::var("RAINBOW_WEBDRIVER").unwrap_or_else(|_| {
        panic!(
            "RAINBOW_WEBDRIVER is not set: run the suite with scripts/test.sh, which installs \
             chromium + chromium-driver and starts chromedriver, or point it at one \
             (http://127.0.0.1:9515)"
        )
    })
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn browser(javascript: bool) -> Client {
    let mut args = vec![
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
    ];
    if !javascript {
        args.push("--blink-settings=scriptEnabled=false");
    }
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), "chrome".into());
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "binary": "/usr/bin/chromium", "args": args }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&webdriver())
        .await
        .expect("a chromedriver session")
}

async fn shot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).expect("write screenshot");
}

/// Waits (polling the DOM) until `css`'s text satisfies `ok`; panics with the page after
/// `timeout`.
async fn wait_text(
    client: &Client,
    css: &str,
    timeout: Duration,
    ok: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        if let Ok(el) = client.find(Locator::Css(css)).await
            && let Ok(text) = el.text().await
            && ok(text.trim())
        {
            return text.trim().to_owned();
        }
        if start.elapsed() > timeout {
            let page = client.source().await.unwrap_or_default();
            panic!("timed out waiting on `{css}`: {page}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Types `text` into the element with id `id`.
async fn type_into(client: &Client, id: &str, text: &str) {
    let field = client.find(Locator::Id(id)).await.expect(id);
    field.send_keys(text).await.expect("typing");
}

/// Clicks the element with id `id`.
async fn click(client: &Client, id: &str) {
    let el = client.find(Locator::Id(id)).await.expect(id);
    el.click().await.expect("click");
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Kills the child process when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_listening(port: u16) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the UI never listened on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rainbow_pipeline_in_a_browser() {
    let home = tempfile::tempdir().expect("home");
    let demo = Command::new(RAINBOW)
        .args(["--home"])
        .arg(home.path())
        .args(["demo", "--days", "6", "--orders-per-day", "40"])
        .output()
        .expect("rainbow demo");
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let port = free_port();
    let _dev = Guard(
        Command::new(RAINBOW)
            .args(["--home"])
            .arg(home.path())
            .args([
                "dev",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--interval",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rainbow dev"),
    );
    wait_listening(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = browser(true).await;

    // The lineage: every asset drawn, in its state.
    client.goto(&format!("{base}/")).await.expect("lineage");
    let fact = client
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(r#"g[data-key="main_warehouse/fact_sales"]"#))
        .await
        .expect("fact_sales on the lineage");
    let class = fact.attr("class").await.expect("class").unwrap_or_default();
    assert!(class.contains("materialized"), "{class}");
    let nodes = client
        .find_all(Locator::Css("g.node"))
        .await
        .expect("nodes");
    assert!(nodes.len() >= 30, "{} nodes", nodes.len());
    shot(&client, "pipeline-lineage").await;

    // Launch a backfill of three partitions from the dialog; watch it finish.
    client
        .goto(&format!("{base}/backfills/new"))
        .await
        .expect("dialog");
    type_into(&client, "select", "raw/orders").await;
    type_into(&client, "from", "2026-01-02").await;
    type_into(&client, "to", "2026-01-04").await;
    click(&client, "preview-button").await;
    let summary = wait_text(&client, "#preview-summary", Duration::from_secs(30), |t| {
        !t.is_empty()
    })
    .await;
    assert!(
        summary.contains("covering 3 asset partition(s)"),
        "{summary}"
    );
    shot(&client, "pipeline-backfill-preview").await;
    click(&client, "launch").await;
    let status = wait_text(&client, "#backfill-status", Duration::from_secs(120), |t| {
        t == "completed" || t == "failed" || t == "canceled"
    })
    .await;
    assert_eq!(status, "completed");
    let url = client.current_url().await.expect("url");
    assert!(url.path().starts_with("/backfills/"), "{url}");
    shot(&client, "pipeline-backfill-completed").await;

    // Open the unit's run and its log.
    let run = client
        .find(Locator::Css(r#"#backfill-live a[href^="/runs/"]"#))
        .await
        .expect("a run link");
    run.click().await.expect("click");
    wait_text(&client, "#run-status", Duration::from_secs(30), |t| {
        t == "SUCCESS"
    })
    .await;
    let log = client
        .find(Locator::Id("event-log"))
        .await
        .expect("log")
        .text()
        .await
        .expect("text");
    assert!(
        log.contains("run_succeeded") && log.contains("materialization"),
        "{log}"
    );
    shot(&client, "pipeline-run").await;

    // An asset page with its compiled SQL, and the dashboard's analyses.
    client
        .goto(&format!("{base}/assets/main_warehouse/fact_sales"))
        .await
        .expect("asset");
    let sql = client
        .find(Locator::Css("pre.sql"))
        .await
        .expect("compiled SQL")
        .text()
        .await
        .expect("text");
    assert!(sql.contains("main_staging.stg_orders"), "{sql}");
    shot(&client, "pipeline-asset").await;
    client
        .goto(&format!("{base}/dashboard"))
        .await
        .expect("dashboard");
    let sections = client
        .find_all(Locator::Css("section.analysis"))
        .await
        .expect("analyses");
    assert_eq!(sections.len(), 6);
    shot(&client, "pipeline-dashboard").await;
    client.close().await.expect("close");
}

/// `slow` takes 250 ms per partition.
fn slow_defs() -> Definitions {
    Definitions::new().asset(
        asset("slow")
            .group("demo")
            .partitions(PartitionsDefinition::daily("2024-01-01").end("2024-03-01"))
            .compute(|_| async {
                tokio::time::sleep(Duration::from_millis(250)).await;
                Ok::<_, BoxError>(MaterializeResult::new().row_count(1))
            }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_way_and_plain_forms() {
    let ts = fresh_storage(Backend::Sqlite).await;
    let graph = Arc::new(AssetGraph::build(slow_defs()).expect("definitions"));
    let state = UiState::new(
        graph.clone(),
        ts.storage.clone(),
        UiOptions::default(),
        None,
    );
    let port = free_port();
    let cancel = CancellationToken::new();
    let server = tokio::spawn(rainbow_web_ui::serve(
        format!("127.0.0.1:{port}").parse().expect("addr"),
        state,
        cancel.clone(),
    ));
    let executor =
        Executor::new(graph, ts.storage.clone(), &RainbowConfig::default()).expect("executor");
    let daemon = Daemon::new(executor, Arc::new(SystemClock), DaemonOptions::default());
    let daemon_cancel = cancel.clone();
    let daemon =
        tokio::spawn(async move { daemon.run(Duration::from_millis(300), daemon_cancel).await });
    wait_listening(port).await;
    let base = format!("http://127.0.0.1:{port}");

    // With JavaScript: launch 40 partitions one at a time, cancel once some are done.
    let client = browser(true).await;
    client
        .goto(&format!(
            "{base}/backfills/new?select=slow&from=2024-01-01&to=2024-02-09&max_concurrent=1"
        ))
        .await
        .expect("dialog");
    click(&client, "preview-button").await;
    let summary = wait_text(&client, "#preview-summary", Duration::from_secs(30), |t| {
        !t.is_empty()
    })
    .await;
    assert!(summary.starts_with("40 unit(s)"), "{summary}");
    click(&client, "launch").await;
    wait_text(&client, ".progress-text", Duration::from_secs(60), |t| {
        t.split(' ')
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|done| done >= 2)
    })
    .await;
    shot(&client, "backfill-running").await;
    click(&client, "cancel-button").await;
    let status = wait_text(&client, "#backfill-status", Duration::from_secs(60), |t| {
        t == "canceled"
    })
    .await;
    assert_eq!(status, "canceled");
    let progress = client
        .find(Locator::Css(".progress-text"))
        .await
        .expect("progress")
        .text()
        .await
        .expect("text");
    let done: u32 = progress
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!((2..40).contains(&done), "canceled mid-way: {progress}");
    shot(&client, "backfill-canceled").await;
    client.close().await.expect("close");

    // Without JavaScript: the same dialog works with plain forms and redirects.
    let plain = browser(false).await;
    plain
        .goto(&format!(
            "{base}/backfills/new?select=slow&mode=keys&keys=2024-02-20,2024-02-21"
        ))
        .await
        .expect("dialog");
    let keys_radio = plain
        .find(Locator::Css(r#"input[name="mode"][value="keys"]"#))
        .await
        .expect("radio");
    assert_eq!(
        keys_radio.prop("checked").await.expect("prop").as_deref(),
        Some("true")
    );
    click(&plain, "preview-button").await;
    let summary = wait_text(&plain, "#preview-summary", Duration::from_secs(30), |t| {
        !t.is_empty()
    })
    .await;
    assert!(summary.starts_with("2 unit(s)"), "{summary}");
    click(&plain, "launch").await;
    // The POST answers 303 to the backfill's page; without htmx it never updates itself, so
    // reload it until the daemon has finished.
    wait_text(&plain, "#backfill-status", Duration::from_secs(30), |_| {
        true
    })
    .await;
    let page = plain.current_url().await.expect("url");
    assert!(page.path().starts_with("/backfills/"), "{page}");
    let start = Instant::now();
    loop {
        // Reloading can race the browser's end of the previous navigation (chromedriver answers
        // "aborted by navigation"): that is a retry, bounded by the timeout below.
        let reloaded = plain.goto(page.as_str()).await.is_ok();
        let status = match plain.find(Locator::Id("backfill-status")).await {
            Ok(el) if reloaded => el.text().await.unwrap_or_default(),
            _ => String::new(),
        };
        if status.trim() == "completed" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "still `{status}`: {}",
            plain.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    shot(&plain, "backfill-no-javascript").await;
    plain.close().await.expect("close");

    cancel.cancel();
    server.await.expect("server task").expect("served");
    daemon.await.expect("daemon task").expect("daemon");
}
