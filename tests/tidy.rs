//! Tidy tests: the invariants ARCHITECTURE.md states about the crate map, checked on the real
//! dependency graph (`cargo metadata`) and the source tree, as rust-analyzer's tidy tests do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The hakari-managed crate that only unifies dependencies' features (every member depends on
/// it; no code uses it): not an edge of the crate map.
const WORKSPACE_HACK: &str = "workspace-hack";

/// Every package of the workspace's resolved graph: name -> names of its normal (non-dev)
/// dependencies, without [`WORKSPACE_HACK`].
fn dependency_graph() -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // This machine's platform only: other platforms' packages are never downloaded here.
    let rustc =
        std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("-vV")
            .output()
            .expect("rustc -vV runs");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc names its host");
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let workspace: BTreeSet<String> = meta["workspace_members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|id| names.get(id.as_str()?).map(|n| (*n).to_owned()))
        .filter(|n| n != WORKSPACE_HACK)
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve") {
        let Some(name) = node["id"].as_str().and_then(|id| names.get(id)) else {
            continue;
        };
        let deps = graph.entry((*name).to_owned()).or_default();
        for dep in node["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null());
            if let (true, Some(dep_name)) =
                (normal, dep["pkg"].as_str().and_then(|id| names.get(id)))
                && *dep_name != WORKSPACE_HACK
            {
                deps.insert((*dep_name).to_owned());
            }
        }
    }
    (graph, workspace)
}

/// Everything `package` depends on, transitively (normal dependencies).
fn closure(graph: &BTreeMap<String, BTreeSet<String>>, package: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![package.to_owned()];
    while let Some(p) = stack.pop() {
        for d in graph.get(&p).into_iter().flatten() {
            if seen.insert(d.clone()) {
                stack.push(d.clone());
            }
        }
    }
    seen
}

/// Crates that speak HTTP (servers and clients).
const HTTP: [&str; 6] = [
    "axum",
    "hyper",
    "reqwest",
    "tower-http",
    "leptos",
    "actix-web",
];

#[test]
fn the_engine_knows_nothing_of_dbt_sql_the_warehouse_or_http() {
    let (graph, _) = dependency_graph();
    let engine = closure(&graph, "rainbow-engine");
    for forbidden in [
        "rainbow-dbt",
        "rainbow-sql",
        "rainbow-warehouse",
        "datafusion",
        "minijinja",
    ]
    .into_iter()
    .chain(HTTP)
    {
        assert!(
            !engine.contains(forbidden),
            "rainbow-engine depends on `{forbidden}` (ARCHITECTURE.md: the engine knows nothing of dbt, SQL execution or HTTP)"
        );
    }
}

#[test]
fn the_warehouse_knows_nothing_of_dbt_or_the_engine() {
    let (graph, _) = dependency_graph();
    let warehouse = closure(&graph, "rainbow-warehouse");
    for forbidden in ["rainbow-dbt", "rainbow-engine", "minijinja", "axum"] {
        assert!(
            !warehouse.contains(forbidden),
            "rainbow-warehouse depends on `{forbidden}` (it only runs BigQuery SQL on DataFusion + Delta)"
        );
    }
}

#[test]
fn only_the_api_and_the_web_ui_speak_http() {
    let (graph, workspace) = dependency_graph();
    for member in &workspace {
        // rainbow-bigquery is a client of BigQuery's REST API (its HTTP client is built with
        // timeouts there); nothing else serves or calls HTTP directly.
        if [
            "rainbow-api",
            "rainbow-web-ui",
            "rainbow",
            "rainbow-bigquery",
        ]
        .contains(&member.as_str())
        {
            continue;
        }
        let deps = &graph[member];
        for http in HTTP {
            assert!(
                !deps.contains(http),
                "`{member}` depends on `{http}` directly: only api/, web-ui/ and bigquery/ speak HTTP"
            );
        }
    }
}

#[test]
fn every_source_file_says_what_it_owns() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "tests" {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                if !text.starts_with("//!") {
                    missing.push(
                        path.strip_prefix(root)
                            .unwrap_or(&path)
                            .display()
                            .to_string(),
                    );
                }
            }
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "files without a `//!` doc saying what the module owns: {missing:?}"
    );
}

/// Lines of `dir`'s Rust files (recursively) that contain any of `needles`.
fn mentions(dir: &str, needles: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut found = Vec::new();
    let mut stack = vec![root.clone()];
    if root.is_file() {
        stack.clear();
    }
    let mut files = Vec::new();
    if root.is_file() {
        files.push(root.clone());
    }
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for (i, line) in text.lines().enumerate() {
            if needles.iter().any(|n| line.contains(n)) {
                found.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn engine_layers_point_one_way() {
    // Storage records; it never runs, monitors or plans.
    let up = [
        "crate::executor",
        "crate::monitor",
        "crate::daemon",
        "crate::backfill",
        "crate::cli",
        "crate::context",
    ];
    let found = mentions("engine/src/storage", &up);
    assert!(found.is_empty(), "storage reaches up: {found:#?}");
    // Partitions are pure: no storage, no database, no runtime.
    let found = mentions(
        "engine/src/partitions",
        &["crate::storage", "sqlx", "tokio"],
    );
    assert!(found.is_empty(), "partitions are not pure: {found:#?}");
    // The graph and selection know nothing of storage or execution.
    for file in ["engine/src/graph.rs", "engine/src/selection.rs"] {
        let found = mentions(file, &["crate::storage", "crate::executor", "sqlx"]);
        assert!(found.is_empty(), "{found:#?}");
    }
    // Compute functions see the event log through `event::EventSink` only.
    let found = mentions("engine/src/context.rs", &["crate::storage"]);
    assert!(
        found.is_empty(),
        "the context depends on storage: {found:#?}"
    );
}
