//! What every handler shares: the code location's [`AssetGraph`], run storage, the operator
//! token, the CSRF token, the lineage layout cache and the code location's [`CodeLocationUi`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rainbow_engine::event::{Micros, now_micros};
use rainbow_engine::partitions::PartitionContext;
use rainbow_engine::{AssetGraph, Storage};
use serde::Serialize;

use crate::layout::{LayoutKey, LineageLayout};

/// One analysis of the dashboard: a titled table and, optionally, a bar chart of two of its
/// columns ([`CodeLocationUi::analyses`]).
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// Title.
    pub title: String,
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, each cell already formatted as text.
    pub rows: Vec<Vec<String>>,
    /// Bar chart: (label column index, numeric value column index).
    pub chart: Option<(usize, usize)>,
}

/// The future [`CodeLocationUi::analyses`] returns.
pub type DashboardFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Analysis>, String>> + Send + 'a>>;

/// What only the code location knows: its analyses, read from its warehouse (the UI does not
/// know warehouses), and the compiled SQL of its SQL models (the UI does not know dbt).
pub trait CodeLocationUi: Send + Sync {
    /// Computes every analysis of the dashboard now; an error is shown on the page as text.
    fn analyses(&self) -> DashboardFuture<'_>;

    /// The compiled SQL of the model behind `key`, if it is a SQL model.
    fn compiled_sql(&self, key: &rainbow_engine::AssetKey) -> Option<String> {
        let _ = key;
        None
    }
}

/// How the UI is served.
#[derive(Debug, Clone)]
pub struct UiOptions {
    /// Operator token: required for every request when set (header `Authorization: Bearer`,
    /// or the cookie set by `/login`). Required by [`crate::serve`] on non-loopback addresses.
    pub token: Option<String>,
    /// Heartbeat age after which a backfill's process is presumed dead (resume).
    pub heartbeat_timeout: Duration,
    /// Server-side layout is skipped (layers only) above this many drawn nodes.
    pub sugiyama_max_nodes: usize,
}

impl Default for UiOptions {
    fn default() -> Self {
        UiOptions {
            token: None,
            heartbeat_timeout: Duration::from_secs(120),
            sugiyama_max_nodes: 2_000,
        }
    }
}

/// Shared state of the UI's handlers. Cheap to clone.
#[derive(Clone)]
pub struct UiState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub graph: Arc<AssetGraph>,
    pub storage: Storage,
    pub options: UiOptions,
    /// Random per process: forms carry it, state-changing requests must echo it.
    pub csrf: String,
    pub layouts: Mutex<HashMap<LayoutKey, Arc<LineageLayout>>>,
    pub code_location: Option<Arc<dyn CodeLocationUi>>,
    pub started_at: Micros,
    /// A hash of the definitions' keys and edges: layouts are per definitions.
    pub definitions_hash: String,
    /// Partition keys enumerated recently (40,000 hourly keys take milliseconds to list):
    /// reused for [`PARTITION_KEYS_TTL`] while the dynamic partitions stay the same.
    pub partition_context: Mutex<Option<(std::time::Instant, PartitionContext)>>,
    /// Every asset's state, until storage changes ([`crate::status`]).
    pub states: Mutex<crate::status::StatesCache>,
}

/// How long enumerated partition keys are reused: a new time partition shows up at most this
/// late.
const PARTITION_KEYS_TTL: Duration = Duration::from_secs(5);

impl UiState {
    /// State over `graph` and `storage`; `code_location` supplies the dashboard's analyses
    /// and SQL models' compiled SQL.
    pub fn new(
        graph: Arc<AssetGraph>,
        storage: Storage,
        options: UiOptions,
        code_location: Option<Arc<dyn CodeLocationUi>>,
    ) -> Self {
        let definitions_hash = definitions_hash(&graph);
        UiState {
            inner: Arc::new(Inner {
                graph,
                storage,
                options,
                csrf: uuid::Uuid::new_v4().simple().to_string(),
                layouts: Mutex::new(HashMap::new()),
                code_location,
                started_at: now_micros(),
                definitions_hash,
                partition_context: Mutex::new(None),
                states: Mutex::new(None),
            }),
        }
    }

    /// The CSRF token forms must carry (`csrf` field or `X-CSRF-Token` header).
    pub fn csrf_token(&self) -> &str {
        &self.inner.csrf
    }

    /// The asset graph served.
    pub fn graph(&self) -> &Arc<AssetGraph> {
        &self.inner.graph
    }

    /// Run storage.
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    /// A partition context at about now with the stored dynamic partitions, its enumerated
    /// keys cached for a few seconds across requests.
    pub(crate) async fn partition_context(&self) -> rainbow_engine::Result<PartitionContext> {
        let uses_dynamic = self
            .graph()
            .nodes()
            .iter()
            .any(|n| n.spec.partitions.as_ref().is_some_and(|p| p.uses_dynamic()));
        let dynamic = if uses_dynamic {
            self.storage().dynamic_partitions().await?
        } else {
            Default::default()
        };
        if let Ok(cached) = self.inner.partition_context.lock()
            && let Some((at, ctx)) = cached.as_ref()
            && at.elapsed() < PARTITION_KEYS_TTL
            && ctx.dynamic == dynamic
        {
            return Ok(ctx.clone());
        }
        let mut ctx = PartitionContext::at(chrono::Utc::now());
        ctx.dynamic = dynamic;
        if let Ok(mut cached) = self.inner.partition_context.lock() {
            *cached = Some((std::time::Instant::now(), ctx.clone()));
        }
        Ok(ctx)
    }
}

/// A hash of every asset key and its parents, in node order (std's SipHash with fixed keys:
/// the same definitions give the same hash in every process of this build).
fn definitions_hash(graph: &AssetGraph) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for (id, node) in graph.nodes().iter().enumerate() {
        node.spec.key.to_string().hash(&mut h);
        graph.parents(id).hash(&mut h);
    }
    format!("{:016x}", h.finish())
}
