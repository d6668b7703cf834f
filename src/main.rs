//! The `rainbow` binary: the Rainbow code location's command line — the engine's commands
//! over the code location's definitions, plus `rainbow seed-data` (the Rainbow DB generator)
//! and dbt's verbs on the embedded warehouse (`seed`, `run`, `snapshot`, `test`, `build`, `query`).
//!
//! Until the Rainbow pipeline's own assets land, the code location is the quickstart example.

use std::process::ExitCode;

mod dbt;
mod seed_data;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "seed-data") {
        return seed_data::main();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if dbt::handles(&args) {
        return dbt::main();
    }
    rainbow_engine::cli::main(rainbow_examples::quickstart::definitions())
}
