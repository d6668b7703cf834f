//! The `rainbow` binary: the Rainbow code location's command line.
//!
//! Until the Rainbow pipeline's own assets land, the code location is the quickstart example.

use std::process::ExitCode;

fn main() -> ExitCode {
    rainbow_engine::cli::main(rainbow_examples::quickstart::definitions())
}
