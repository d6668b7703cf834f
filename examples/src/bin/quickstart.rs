//! Serves the quickstart definitions through the `rainbow` command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    rainbow_engine::cli::main(rainbow_examples::quickstart::definitions())
}
