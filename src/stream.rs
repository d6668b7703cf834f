//! `rainbow cdc` and `rainbow speed`: the speed layer's two long-running processes
//! ([`rainbow_streaming`]), configured by the `[streaming]` section (brokers, topic prefix,
//! slot, batch sizes) over the `[pipeline]` section's Rainbow DB and warehouse. Both stop
//! cleanly on Ctrl-C or SIGTERM, between batches, and resume where they stopped.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use rainbow_engine::cli::GlobalArgs;
use rainbow_streaming::config::StreamingConfig;
use tokio_util::sync::CancellationToken;

/// Overrides of the `[streaming]` settings shared by both commands.
#[derive(Debug, Args)]
pub struct StreamingArgs {
    /// Kafka brokers (`host:port[,…]`; config `streaming.brokers`).
    #[arg(long, env = "RAINBOW_KAFKA_BROKERS")]
    brokers: Option<String>,
    /// Prefix of the topic names (config `streaming.topic_prefix`).
    #[arg(long)]
    topic_prefix: Option<String>,
}

/// `rainbow cdc`.
#[derive(Debug, Args)]
pub struct CdcArgs {
    #[command(flatten)]
    streaming: StreamingArgs,
    /// The replication slot (config `streaming.slot`).
    #[arg(long)]
    slot: Option<String>,
}

/// `rainbow speed`.
#[derive(Debug, Args)]
pub struct SpeedArgs {
    #[command(flatten)]
    streaming: StreamingArgs,
}

fn settings(global: &GlobalArgs, args: &StreamingArgs) -> anyhow::Result<StreamingConfig> {
    let config = global.config()?;
    let mut streaming: StreamingConfig = config
        .get_or("streaming", &StreamingConfig::default())
        .context("reading the [streaming] settings")?;
    if let Some(brokers) = &args.brokers {
        streaming.brokers = brokers.clone();
    }
    if let Some(prefix) = &args.topic_prefix {
        streaming.topic_prefix = prefix.clone();
    }
    Ok(streaming)
}

fn pipeline(global: &GlobalArgs) -> anyhow::Result<rainbow_assets::pipeline::PipelineSettings> {
    rainbow_assets::pipeline::PipelineSettings::load(&global.home, &global.config()?)
        .context("reading the [pipeline] settings")
}

/// SIGTERM (a supervisor's stop) cancels like Ctrl-C.
fn cancel_on_signals() -> CancellationToken {
    let cancel = rainbow_engine::cli::cancel_on_ctrl_c();
    #[cfg(unix)]
    {
        let on_term = cancel.clone();
        tokio::spawn(async move {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
                on_term.cancel();
            }
        });
    }
    cancel
}

/// `rainbow cdc`: captures the Rainbow DB's changes into Kafka until stopped.
pub async fn cdc(global: &GlobalArgs, args: &CdcArgs) -> anyhow::Result<ExitCode> {
    let mut streaming = settings(global, &args.streaming)?;
    if let Some(slot) = &args.slot {
        streaming.slot = slot.clone();
    }
    streaming.validate()?;
    let source = pipeline(global)?.source_url;
    let settings = streaming.cdc(&source);
    println!(
        "rainbow cdc: {} → Kafka {} (slot {}, topics {}<table>); Ctrl-C stops",
        rainbow_db::redact(&source),
        streaming.brokers,
        streaming.slot,
        streaming.topic_prefix
    );
    let stats = rainbow_streaming::cdc::run(&settings, cancel_on_signals())
        .await
        .context("change data capture")?;
    println!(
        "stopped: {} snapshot rows, {} changes in {} batches; slot at {}",
        stats.snapshot_rows, stats.changes, stats.batches, stats.position
    );
    Ok(ExitCode::SUCCESS)
}

/// `rainbow speed`: writes the change topics into the warehouse's speed tables until stopped.
pub async fn speed(global: &GlobalArgs, args: &SpeedArgs) -> anyhow::Result<ExitCode> {
    let streaming = settings(global, &args.streaming)?;
    streaming.validate()?;
    let pipeline = pipeline(global)?;
    let warehouse = rainbow_warehouse::Warehouse::open(&pipeline.warehouse, "main")
        .await
        .with_context(|| format!("opening the warehouse {}", pipeline.warehouse))?;
    println!(
        "rainbow speed: Kafka {} → {}/speed (group {}); Ctrl-C stops",
        streaming.brokers, pipeline.warehouse, streaming.sink_group
    );
    let stats = rainbow_streaming::sink::run(&streaming.sink(), &warehouse, cancel_on_signals())
        .await
        .context("the speed sink")?;
    println!(
        "stopped: {} change events in {} commits, {} to the dead-letter topic",
        stats.events, stats.commits, stats.dead_letters
    );
    Ok(ExitCode::SUCCESS)
}

/// `rainbow bench cdc`'s options.
#[derive(Debug, Args)]
pub struct BenchCdcArgs {
    /// Admin URL of a PostgreSQL server with wal2json and `wal_level=logical` (a database is
    /// created for the run and dropped after).
    #[arg(long, env = "RAINBOW_TEST_POSTGRES_URL")]
    postgres: String,
    /// Kafka brokers.
    #[arg(long, env = "RAINBOW_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Changes per second in the steady phase.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    rate: u32,
    /// Seconds of steady load.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=3600))]
    seconds: u32,
    /// Changes per transaction.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    per_transaction: u32,
    /// Changes in the burst phase.
    #[arg(long, default_value_t = 200_000)]
    burst: u32,
}

/// `rainbow bench cdc`: a table, then one JSON line.
pub async fn bench(args: &BenchCdcArgs) -> anyhow::Result<ExitCode> {
    let report = rainbow_streaming::bench::run(&rainbow_streaming::bench::BenchOptions {
        postgres: args.postgres.clone(),
        brokers: args.brokers.clone(),
        rate: args.rate,
        seconds: args.seconds,
        per_transaction: args.per_transaction,
        burst: args.burst,
    })
    .await
    .context("the CDC benchmark")?;
    println!(
        "steady: {} changes at {}/s offered: commit → visible p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        report.steady_changes, report.offered_rate, report.p50_ms, report.p99_ms, report.max_ms
    );
    println!(
        "burst: {} changes end to end at {:.0} changes/s",
        report.burst_changes, report.burst_changes_per_s
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}
