//! One module per page (and the actions that belong to it). Each handler loads plain data
//! from the engine, then renders it as HTML or returns it as JSON ([`crate::shell::respond`]).

pub(crate) mod assets;
pub(crate) mod backfills;
pub(crate) mod dashboard;
pub(crate) mod lineage;
pub(crate) mod partitions;
pub(crate) mod runs;
pub(crate) mod schedules;
