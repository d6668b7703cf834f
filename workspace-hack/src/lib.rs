//! The workspace-hack crate, managed by `cargo hakari` (`.config/hakari.toml`): every member
//! depends on it, and its `Cargo.toml` names each third-party dependency with the union of the
//! features the workspace builds it with — so the demo's `--no-default-features` build and the
//! full build (web UI, Kafka) compile every shared dependency once, identically. No code.
