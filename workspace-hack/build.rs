//! A build script, so cargo treats the workspace-hack's build dependencies as build
//! dependencies (see `lib.rs`).

fn main() {}
