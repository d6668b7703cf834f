//! # Rainbow engine
//!
//! Asset-graph orchestration: declare assets in Rust, build the [`AssetGraph`], select with the
//! [selection language](selection), execute with the tokio [`Executor`], and keep runs, events,
//! materializations and check results in [`Storage`] (SQLite by default, PostgreSQL in
//! production). The [`cli`] module is the `rainbow` command line any code location can expose.
//!
//! ```
//! use rainbow_engine::prelude::*;
//!
//! # fn main() -> Result<(), rainbow_engine::Error> {
//! let orders = asset("raw/orders")
//!     .group("raw")
//!     .kind("parquet")
//!     .code_version("1")
//!     .compute(|_ctx| async { Ok::<_, BoxError>(MaterializeResult::new().row_count(42)) });
//! let daily = asset("marts/daily_orders")
//!     .dep("raw/orders")
//!     .compute(|ctx| async move {
//!         ctx.log_info("aggregating");
//!         Ok::<_, BoxError>(MaterializeResult::new())
//!     });
//! let graph = AssetGraph::build(Definitions::new().asset(orders).asset(daily))?;
//! let keys = graph.select_keys(&["+marts/daily_orders"], &[] as &[&str])?;
//! assert_eq!(keys.len(), 2);
//! # Ok(())
//! # }
//! ```

pub mod asset;
pub mod backfill;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod context;
pub mod daemon;
pub mod definitions;
pub mod error;
pub mod event;
pub mod executor;
pub mod graph;
pub mod key;
pub mod metadata;
pub mod monitor;
pub mod partitions;
pub mod process;
pub mod random;
pub mod resource;
pub mod selection;
pub mod staleness;
pub mod storage;
pub mod tags;

pub use asset::{
    AssetDefinition, AssetDep, AssetSpec, AutomationCondition, BackfillPolicy, MaterializeResult,
    ObserveResult, RetryPolicy, asset,
};
pub use check::{AssetCheckDefinition, AssetCheckResult, AssetCheckSeverity, AssetCheckSpec};
pub use config::RainbowConfig;
pub use context::AssetContext;
pub use definitions::{
    CatchUpPolicy, Definitions, JobDefinition, ScheduleDefinition, SensorDefinition,
};
pub use error::{BoxError, Error, Result};
pub use event::{Event, EventData, RunStatus};
pub use executor::{Executor, RunOptions, RunResult, StepStatus};
pub use graph::AssetGraph;
pub use key::AssetKey;
pub use metadata::{Metadata, MetadataValue, TableSchema};
pub use partitions::{PartitionMapping, PartitionsDefinition};
pub use resource::Resources;
pub use selection::{AssetSelection, NodeSet, Selected};
pub use staleness::{AssetStatus, Staleness};
pub use storage::Storage;

/// Everything a data engineer needs to declare assets.
pub mod prelude {
    pub use crate::{
        AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetContext, AssetDefinition,
        AssetDep, AssetGraph, AssetKey, AssetSpec, AutomationCondition, BackfillPolicy, BoxError,
        Definitions, JobDefinition, MaterializeResult, MetadataValue, ObserveResult,
        PartitionMapping, PartitionsDefinition, RetryPolicy, ScheduleDefinition, TableSchema,
        asset,
    };
}
