//! Staleness transitions: missing -> fresh -> stale (upstream newer / code version changed /
//! upstream stale) -> fresh again.

use rainbow_engine::prelude::*;
use rainbow_engine::staleness::asset_statuses;
use rainbow_engine::{NodeSet, Staleness, Storage};

use crate::on_both_backends;
use crate::support::{Backend, fresh_storage, materialize, noop};

on_both_backends!(staleness_transitions);

fn defs(b_version: &str) -> Definitions {
    Definitions::new().assets([
        noop(asset("a")),
        noop(asset("b").dep("a").code_version(b_version)),
        noop(asset("c").dep("b")),
    ])
}

async fn states(defs: Definitions, storage: &Storage) -> Vec<(String, Staleness, Vec<String>)> {
    let graph = AssetGraph::build(defs).expect("valid");
    asset_statuses(&graph, storage, &NodeSet::full(graph.len()))
        .await
        .expect("statuses")
        .into_iter()
        .map(|s| (s.key.to_string(), s.staleness, s.reasons))
        .collect()
}

fn only(states: &[(String, Staleness, Vec<String>)]) -> Vec<(&str, Staleness)> {
    states.iter().map(|(k, s, _)| (k.as_str(), *s)).collect()
}

async fn staleness_transitions(backend: Backend) {
    let t = fresh_storage(backend).await;
    let s = &t.storage;
    use Staleness::*;

    assert_eq!(
        only(&states(defs("1"), s).await),
        [("a", Missing), ("b", Missing), ("c", Missing)]
    );

    assert!(materialize(defs("1"), s, "*").await.success());
    assert_eq!(
        only(&states(defs("1"), s).await),
        [("a", Fresh), ("b", Fresh), ("c", Fresh)]
    );

    // Upstream re-materialized: b is stale because of a, c because b is stale.
    assert!(materialize(defs("1"), s, "a").await.success());
    let st = states(defs("1"), s).await;
    assert_eq!(only(&st), [("a", Fresh), ("b", Stale), ("c", Stale)]);
    assert_eq!(st[1].2.len(), 1);
    assert!(
        st[1].2[0].starts_with("upstream `a` was materialized at "),
        "{:?}",
        st[1].2
    );
    assert_eq!(st[2].2, ["upstream `b` is stale"]);

    assert!(materialize(defs("1"), s, "b+").await.success());
    assert_eq!(
        only(&states(defs("1"), s).await),
        [("a", Fresh), ("b", Fresh), ("c", Fresh)]
    );

    // New code for b.
    let st = states(defs("2"), s).await;
    assert_eq!(only(&st), [("a", Fresh), ("b", Stale), ("c", Stale)]);
    assert_eq!(
        st[1].2,
        ["code version changed from `1` to `2` since the last materialization"]
    );

    assert!(materialize(defs("2"), s, "b+").await.success());
    assert_eq!(
        only(&states(defs("2"), s).await),
        [("a", Fresh), ("b", Fresh), ("c", Fresh)]
    );
}

#[tokio::test]
async fn observed_sources_make_downstream_stale_only_when_their_data_version_changes() {
    let t = fresh_storage(Backend::Sqlite).await;
    let version = std::sync::Arc::new(std::sync::Mutex::new("v1".to_owned()));
    let defs = |version: std::sync::Arc<std::sync::Mutex<String>>| {
        Definitions::new()
            .asset(asset("src").source().observe(move |_| {
                let v = version.lock().map(|v| v.clone()).unwrap_or_default();
                async move { Ok::<_, BoxError>(ObserveResult::new(v)) }
            }))
            .asset(noop(asset("derived").dep("src")))
    };
    assert!(
        materialize(defs(version.clone()), &t.storage, "*")
            .await
            .success()
    );
    let st = states(defs(version.clone()), &t.storage).await;
    assert_eq!(
        only(&st),
        [("src", Staleness::Source), ("derived", Staleness::Fresh)]
    );

    // Same data version observed again: still fresh.
    assert!(
        materialize(defs(version.clone()), &t.storage, "src")
            .await
            .success()
    );
    assert_eq!(
        states(defs(version.clone()), &t.storage).await[1].1,
        Staleness::Fresh
    );

    // New data version: stale, with the reason.
    *version.lock().expect("lock") = "v2".into();
    assert!(
        materialize(defs(version.clone()), &t.storage, "src")
            .await
            .success()
    );
    let st = states(defs(version.clone()), &t.storage).await;
    assert_eq!(st[1].1, Staleness::Stale);
    assert!(
        st[1].2[0].starts_with("upstream `src` was observed with a new data version"),
        "{:?}",
        st[1].2
    );
}
