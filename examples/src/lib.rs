//! Example code locations for Rainbow. Each module builds a [`rainbow_engine::Definitions`];
//! each binary under `src/bin/` serves one through the `rainbow` command line.

pub mod quickstart;
