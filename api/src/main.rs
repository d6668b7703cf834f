//! `rainbow-api`: serves the orders API. Configuration from the environment:
//! `DATABASE_URL` (default: the embedded SQLite Rainbow DB at `.rainbow/rainbow_db.sqlite`),
//! `RAINBOW_API_ADDR` (default `127.0.0.1:8080`), `RAINBOW_API_POOL` (connections, default 16),
//! `RAINBOW_API_WORKERS` (tokio worker threads, default one per core), `RAINBOW_LOG` (level).

use anyhow::Context;

/// mimalloc: a request allocates and frees many small buffers (HTTP, JSON, rows) across
/// worker threads, which glibc's allocator served with measurably more CPU (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Ok(v) = std::env::var("RAINBOW_API_WORKERS") {
        let n: usize = v
            .parse()
            .with_context(|| format!("RAINBOW_API_WORKERS=`{v}` is not a number"))?;
        runtime.worker_threads(n.max(1));
    }
    runtime
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let level = std::env::var("RAINBOW_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .init();

    let url = match std::env::var("DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            std::fs::create_dir_all(".rainbow").context("creating .rainbow/")?;
            let path = std::fs::canonicalize(".rainbow").context("resolving .rainbow/")?;
            rainbow_db::sqlite_url(&path.join("rainbow_db.sqlite"))
        }
    };
    let addr = std::env::var("RAINBOW_API_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let pool: u32 = match std::env::var("RAINBOW_API_POOL") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("RAINBOW_API_POOL=`{v}` is not a number"))?,
        Err(_) => 16,
    };
    let db = tokio::time::timeout(
        rainbow_api::CONNECT_TIMEOUT,
        rainbow_api::connect(&url, pool),
    )
    .await
    .context("timed out connecting to the database")?
    .context("connecting to the database")?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr} (RAINBOW_API_ADDR)"))?;
    tracing::info!(addr = %listener.local_addr()?, database = db.backend.name(), "rainbow-api listening");
    rainbow_api::serve(listener, rainbow_api::AppState::new(db), shutdown())
        .await
        .context("serving")?;
    tracing::info!("rainbow-api stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
