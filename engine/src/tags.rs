//! Run tag names the engine sets and reads: on runs launched by commands, range runs and
//! backfills of a job. A module of its own below storage, which filters runs by them.

/// The job a run belongs to when it was launched for a job without being a job run (a
/// backfill of the job's selection).
pub const JOB: &str = "rainbow/job";
/// The command that launched a run (`build`, `test`…), set by its launcher; `rainbow runs`
/// shows it before the selection.
pub const COMMAND: &str = "rainbow/command";
/// The first partition of a range run.
pub const PARTITION_RANGE_START: &str = "rainbow/partition_range_start";
/// The last partition of a range run.
pub const PARTITION_RANGE_END: &str = "rainbow/partition_range_end";
