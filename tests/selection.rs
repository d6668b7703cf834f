//! Every selection operator, and the errors for selectors that match nothing.

use rainbow_engine::prelude::*;

use crate::support::noop;

/// raw/orders ─► stg/orders ─┐
///                           ├─► mart/sales ─► report/daily
/// raw/customers ─► stg/customers ─┘
fn graph() -> AssetGraph {
    let defs = Definitions::new().assets([
        noop(
            asset("raw/orders")
                .group("raw")
                .kind("parquet")
                .tag("tier", "bronze"),
        ),
        noop(
            asset("raw/customers")
                .group("raw")
                .kind("parquet")
                .tag("tier", "silver"),
        ),
        noop(
            asset("stg/orders")
                .dep("raw/orders")
                .group("staging")
                .kind("sql"),
        ),
        noop(
            asset("stg/customers")
                .dep("raw/customers")
                .group("staging")
                .kind("sql"),
        ),
        noop(
            asset("mart/sales")
                .deps(["stg/orders", "stg/customers"])
                .group("mart")
                .kind("sql")
                .owner("team-a"),
        ),
        noop(asset("report/daily").dep("mart/sales").group("reports")),
    ]);
    AssetGraph::build(defs).expect("valid graph")
}

fn sel(g: &AssetGraph, select: &[&str], exclude: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = g
        .select_keys(select, exclude)
        .expect("valid selection")
        .iter()
        .map(ToString::to_string)
        .collect();
    keys.sort();
    keys
}

fn err(g: &AssetGraph, select: &str) -> String {
    g.select(&[select], &[] as &[&str])
        .expect_err("should fail")
        .to_string()
}

#[test]
fn key_and_glob() {
    let g = graph();
    assert_eq!(sel(&g, &["stg/orders"], &[]), ["stg/orders"]);
    assert_eq!(sel(&g, &["key:stg/orders"], &[]), ["stg/orders"]);
    assert_eq!(sel(&g, &["raw/*"], &[]), ["raw/customers", "raw/orders"]);
    assert_eq!(sel(&g, &["*orders"], &[]), ["raw/orders", "stg/orders"]);
    assert_eq!(sel(&g, &["*"], &[]).len(), 6);
}

#[test]
fn upstream_and_downstream_with_depth() {
    let g = graph();
    assert_eq!(
        sel(&g, &["+mart/sales"], &[]),
        [
            "mart/sales",
            "raw/customers",
            "raw/orders",
            "stg/customers",
            "stg/orders"
        ]
    );
    assert_eq!(
        sel(&g, &["1+mart/sales"], &[]),
        ["mart/sales", "stg/customers", "stg/orders"]
    );
    assert_eq!(
        sel(&g, &["raw/orders+"], &[]),
        ["mart/sales", "raw/orders", "report/daily", "stg/orders"]
    );
    assert_eq!(
        sel(&g, &["raw/orders+1"], &[]),
        ["raw/orders", "stg/orders"]
    );
    assert_eq!(
        sel(&g, &["2+report/daily+1"], &[]),
        ["mart/sales", "report/daily", "stg/customers", "stg/orders"]
    );
    assert_eq!(sel(&g, &["+group:staging"], &[]).len(), 4);
    // `@x`: x, its descendants, and every ancestor of those (dbt's "at" operator).
    assert_eq!(
        sel(&g, &["@stg/orders"], &[]),
        [
            "mart/sales",
            "raw/customers",
            "raw/orders",
            "report/daily",
            "stg/customers",
            "stg/orders"
        ]
    );
    assert_eq!(
        sel(&g, &["@report/daily"], &[]).len(),
        6,
        "a leaf: itself and all its ancestors"
    );
    assert!(err(&g, "@+mart/sales").contains("`@` cannot be combined with `+`"));
}

#[test]
fn group_tag_kind_owner() {
    let g = graph();
    assert_eq!(
        sel(&g, &["group:raw"], &[]),
        ["raw/customers", "raw/orders"]
    );
    assert_eq!(sel(&g, &["tag:tier"], &[]), ["raw/customers", "raw/orders"]);
    assert_eq!(sel(&g, &["tag:tier=bronze"], &[]), ["raw/orders"]);
    assert_eq!(
        sel(&g, &["kind:sql"], &[]),
        ["mart/sales", "stg/customers", "stg/orders"]
    );
    assert_eq!(sel(&g, &["owner:team-a"], &[]), ["mart/sales"]);
}

#[test]
fn union_intersection_and_exclude() {
    let g = graph();
    // Whitespace is union, within one expression and across repeated --select.
    assert_eq!(
        sel(&g, &["raw/orders report/daily"], &[]),
        ["raw/orders", "report/daily"]
    );
    assert_eq!(
        sel(&g, &["raw/orders", "report/daily"], &[]),
        ["raw/orders", "report/daily"]
    );
    // Comma is intersection.
    assert_eq!(
        sel(&g, &["kind:sql,group:staging"], &[]),
        ["stg/customers", "stg/orders"]
    );
    assert_eq!(
        sel(&g, &["+mart/sales,tag:tier=silver"], &[]),
        ["raw/customers"]
    );
    // Exclusion.
    assert_eq!(
        sel(&g, &["+mart/sales"], &["group:raw"]),
        ["mart/sales", "stg/customers", "stg/orders"]
    );
    assert_eq!(sel(&g, &["*"], &["mart/sales+"]).len(), 4);
    // No --select means everything.
    assert_eq!(sel(&g, &[], &["group:raw"]).len(), 4);
}

#[test]
fn unknown_selectors_are_errors_not_empty_selections() {
    let g = graph();
    assert_eq!(
        err(&g, "stg/order"),
        "invalid selection `stg/order`: unknown asset `stg/order` (did you mean `stg/orders`?)"
    );
    assert!(
        err(&g, "group:nope")
            .contains("no asset has group `nope` (known groups: mart, raw, reports, staging)")
    );
    assert!(err(&g, "tag:tier=gold").contains("no asset has tag `tier=gold`"));
    assert!(err(&g, "kind:python").contains("no asset has kind `python`"));
    assert!(err(&g, "owner:nobody").contains("no asset has owner `nobody`"));
    assert!(err(&g, "nothing/*").contains("no asset key matches `nothing/*`"));
    assert!(err(&g, "colour:red").contains("unknown selector method `colour:`"));
    assert!(err(&g, "a+b").contains("`+` may only lead or trail"));
    assert!(err(&g, "").contains("the selection is empty"));
    // An error in excluded selectors is reported too.
    let e = g
        .select(&["*"], &["group:nope"])
        .expect_err("bad exclude")
        .to_string();
    assert!(e.contains("group `nope`"), "{e}");
}

#[test]
fn jobs_are_validated_when_the_graph_is_built() {
    let defs = Definitions::new()
        .asset(noop(asset("a")))
        .job(JobDefinition::new("nightly", "+b"));
    let e = AssetGraph::build(defs).err().expect("bad job").to_string();
    assert!(
        e.contains("job `nightly` has an invalid selection") && e.contains("unknown asset `b`"),
        "{e}"
    );

    let defs = Definitions::new()
        .asset(noop(asset("a")))
        .job(JobDefinition::new("all", "*"))
        .schedule(ScheduleDefinition::new("s", "not cron", "all"));
    let e = AssetGraph::build(defs).err().expect("bad cron").to_string();
    assert!(
        e.contains("schedule `s` has an invalid cron expression `not cron`"),
        "{e}"
    );
}

/// A dbt-like graph: assets and checks carrying selection attributes.
fn dbt_graph() -> AssetGraph {
    let unique = |asset: &str, name: &str| {
        AssetCheckSpec::new(name, asset)
            .selector("test_name", "unique")
            .selector("resource_type", "test")
            .compute(|_| async { Ok::<_, BoxError>(AssetCheckResult::passed()) })
    };
    let defs = Definitions::new().assets([
        noop(
            asset("main_staging/stg_orders")
                .selector("name", "stg_orders")
                .selector("path", "models/staging/stg_orders.sql")
                .selector("resource_type", "model")
                .selector("config.materialized", "view"),
        )
        .check(unique("main_staging/stg_orders", "unique_stg_orders_id")),
        noop(
            asset("main/fact_sales")
                .dep("main_staging/stg_orders")
                .selector("name", "fact_sales")
                .selector("path", "models/marts/fact_sales.sql")
                .selector("resource_type", "model")
                .selector("config.materialized", "incremental"),
        )
        .check(unique("main/fact_sales", "unique_fact_sales_key"))
        .check(
            AssetCheckSpec::new("not_null_fact_sales_key", "main/fact_sales")
                .selector("test_name", "not_null")
                .selector("resource_type", "test")
                .compute(|_| async { Ok::<_, BoxError>(AssetCheckResult::passed()) }),
        ),
    ]);
    AssetGraph::build(defs).expect("valid graph")
}

/// (asset keys, check names) a selection picks, sorted.
fn picked(g: &AssetGraph, select: &[&str], exclude: &[&str]) -> (Vec<String>, Vec<String>) {
    let s = g
        .select_with_checks(select, exclude)
        .expect("valid selection");
    let mut assets: Vec<String> = s
        .assets
        .iter()
        .map(|n| g.node(n).spec.key.to_string())
        .collect();
    let mut checks: Vec<String> = s
        .checks
        .iter()
        .map(|c| g.checks()[c].spec.name.clone())
        .collect();
    assets.sort();
    checks.sort();
    (assets, checks)
}

#[test]
fn selection_attributes_are_dbt_methods_and_checks_follow_their_assets() {
    let g = dbt_graph();
    // A bare name falls back to the `name` attribute; its checks come along (eager).
    assert_eq!(
        picked(&g, &["stg_orders"], &[]),
        (
            vec!["main_staging/stg_orders".into()],
            vec!["unique_stg_orders_id".into()]
        )
    );
    // `path:` matches a folder and what is under it; `+` walks assets only.
    assert_eq!(
        picked(&g, &["path:models/marts"], &[]).0,
        ["main/fact_sales"]
    );
    assert_eq!(
        picked(&g, &["path:models/marts/"], &[]).0,
        ["main/fact_sales"]
    );
    assert_eq!(picked(&g, &["+path:models/marts"], &[]).0.len(), 2);
    assert_eq!(
        picked(&g, &["config.materialized:view"], &[]).0,
        ["main_staging/stg_orders"]
    );
    // Checks selected by their own attributes, without their assets.
    assert_eq!(
        picked(&g, &["test_name:unique"], &[]),
        (
            vec![],
            vec![
                "unique_fact_sales_key".into(),
                "unique_stg_orders_id".into()
            ]
        )
    );
    // A bare check name selects that check.
    assert_eq!(
        picked(&g, &["not_null_fact_sales_key"], &[]),
        (vec![], vec!["not_null_fact_sales_key".into()])
    );
    // Excluding checks leaves the assets; excluding an asset drops its checks.
    assert_eq!(
        picked(&g, &["*"], &["resource_type:test"]),
        (
            vec!["main/fact_sales".into(), "main_staging/stg_orders".into()],
            vec![]
        )
    );
    assert_eq!(
        picked(&g, &["*"], &["fact_sales"]),
        (
            vec!["main_staging/stg_orders".into()],
            vec!["unique_stg_orders_id".into()]
        )
    );
    assert_eq!(
        picked(&g, &["fact_sales"], &["test_name:not_null"]).1,
        ["unique_fact_sales_key"]
    );
    // Intersection applies to checks too.
    assert_eq!(
        picked(&g, &["test_name:unique,resource_type:test"], &[])
            .1
            .len(),
        2
    );
}

#[test]
fn unknown_attribute_methods_and_values_name_what_exists() {
    let g = dbt_graph();
    let e = err(&g, "pth:models");
    assert!(
        e.contains("unknown selector method `pth:` (did you mean `path`?)")
            && e.contains("config.materialized:")
            && e.contains("test_name:"),
        "{e}"
    );
    let e = err(&g, "config.materialized:tabel");
    assert!(e.contains("nothing has config.materialized `tabel`"), "{e}");
    let e = err(&g, "fact_sale");
    assert!(e.contains("did you mean `fact_sales`"), "{e}");
}
