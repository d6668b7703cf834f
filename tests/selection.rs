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
