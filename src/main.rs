//! The `rainbow` binary: the Rainbow code location's command line — the engine's commands
//! over the code location's definitions, plus `rainbow demo` (the batch layer end to end),
//! `rainbow seed-data` (the Rainbow DB generator), `rainbow bench pipeline`, and dbt's verbs
//! on the embedded warehouse (`seed`, `run`, `snapshot`, `test`, `build`, `query`).
//!
//! The code location is the Rainbow pipeline ([`rainbow_assets::pipeline`]), configured by
//! `<home>/pipeline.toml`; `RAINBOW_CODE_LOCATION=quickstart` serves the quickstart example
//! instead.

use std::path::PathBuf;
use std::process::ExitCode;

mod dbt;
mod demo;
mod seed_data;

/// `--home DIR`, `--home=DIR`, else `RAINBOW_HOME`, else `.rainbow` (as the engine CLI).
fn home(args: &[String]) -> PathBuf {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--home" {
            if let Some(v) = it.next() {
                return PathBuf::from(v);
            }
        } else if let Some(v) = a.strip_prefix("--home=") {
            return PathBuf::from(v);
        }
    }
    std::env::var_os("RAINBOW_HOME").map_or_else(|| PathBuf::from(".rainbow"), PathBuf::from)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("seed-data") => return seed_data::main(),
        Some("demo") => return demo::main(&args),
        Some("bench") if args.get(1).is_some_and(|a| a == "pipeline") => {
            return demo::bench_main(&args[1..]);
        }
        _ => {}
    }
    if dbt::handles(&args) {
        return dbt::main();
    }
    if std::env::var("RAINBOW_CODE_LOCATION").is_ok_and(|v| v == "quickstart") {
        return rainbow_engine::cli::main(rainbow_examples::quickstart::definitions());
    }
    let home = home(&args);
    let definitions = rainbow_assets::pipeline::PipelineSettings::load(&home)
        .and_then(|settings| rainbow_assets::pipeline::definitions(&settings));
    match definitions {
        Ok(defs) => rainbow_engine::cli::main(defs),
        Err(e) => {
            eprintln!("error: loading the Rainbow code location: {e}");
            ExitCode::FAILURE
        }
    }
}
