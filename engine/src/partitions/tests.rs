//! Unit tests of partitions definitions: keys, windows, time zones, mappings.

use chrono::{TimeZone, Utc};

use super::*;

fn at(y: i32, m: u32, d: u32, h: u32) -> PartitionContext {
    PartitionContext::at(
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .expect("valid time"),
    )
}

#[test]
fn daily_keys_stop_at_the_last_complete_day_and_honour_end_offset() {
    let def = PartitionsDefinition::daily("2024-09-01");
    let ctx = at(2024, 9, 4, 10);
    assert_eq!(
        def.keys(&ctx).expect("keys"),
        ["2024-09-01", "2024-09-02", "2024-09-03"]
    );
    let with_current = def.clone().end_offset(1);
    assert_eq!(
        with_current
            .keys(&ctx)
            .expect("keys")
            .last()
            .map(String::as_str),
        Some("2024-09-04")
    );
    let held_back = def.clone().end_offset(-1);
    assert_eq!(
        held_back.keys(&ctx).expect("keys"),
        ["2024-09-01", "2024-09-02"]
    );
    let ended = def.end("2024-09-03");
    assert_eq!(
        ended.keys(&at(2030, 1, 1, 0)).expect("keys"),
        ["2024-09-01", "2024-09-02"]
    );
}

#[test]
fn hourly_weekly_monthly_keys() {
    let hourly = PartitionsDefinition::hourly("2024-09-01-22:00");
    assert_eq!(
        hourly.keys(&at(2024, 9, 2, 1)).expect("keys"),
        ["2024-09-01-22:00", "2024-09-01-23:00", "2024-09-02-00:00"]
    );
    let weekly = PartitionsDefinition::weekly("2024-09-01"); // a Sunday
    assert_eq!(
        weekly.keys(&at(2024, 9, 16, 0)).expect("keys"),
        ["2024-09-01", "2024-09-08"]
    );
    let monthly = PartitionsDefinition::monthly("2024-11-01");
    assert_eq!(
        monthly.keys(&at(2025, 2, 1, 0)).expect("keys"),
        ["2024-11-01", "2024-12-01", "2025-01-01"]
    );
    let w = monthly
        .time_window("2024-12-01")
        .expect("parses")
        .expect("window");
    assert_eq!(w.start.to_rfc3339(), "2024-12-01T00:00:00+00:00");
    assert_eq!(w.end.to_rfc3339(), "2025-01-01T00:00:00+00:00");
}

#[test]
fn daily_windows_across_dst_in_new_york_are_23_and_25_hours() {
    let def = PartitionsDefinition::daily("2024-03-09").timezone("America/New_York");
    let keys = def.keys(&at(2024, 3, 12, 12)).expect("keys");
    assert_eq!(keys, ["2024-03-09", "2024-03-10", "2024-03-11"]);
    let spring = def.time_window("2024-03-10").expect("ok").expect("window");
    assert_eq!(spring.start.to_rfc3339(), "2024-03-10T00:00:00-05:00");
    assert_eq!(spring.end.to_rfc3339(), "2024-03-11T00:00:00-04:00");
    assert_eq!((spring.end - spring.start).num_hours(), 23);
    let fall = PartitionsDefinition::daily("2024-11-01").timezone("America/New_York");
    let w = fall.time_window("2024-11-03").expect("ok").expect("window");
    assert_eq!((w.end - w.start).num_hours(), 25);
}

#[test]
fn hourly_keys_across_dst_skip_the_missing_hour_and_keep_one_repeated_hour() {
    let def = PartitionsDefinition::hourly("2024-03-10-00:00").timezone("America/New_York");
    let keys = def.keys(&at(2024, 3, 10, 9)).expect("keys"); // 05:00 local EDT
    assert_eq!(
        keys,
        [
            "2024-03-10-00:00",
            "2024-03-10-01:00",
            "2024-03-10-03:00",
            "2024-03-10-04:00"
        ],
        "02:00 does not exist on 2024-03-10 in New York"
    );
    let fall = PartitionsDefinition::hourly("2024-11-03-00:00").timezone("America/New_York");
    let keys = fall.keys(&at(2024, 11, 3, 9)).expect("keys"); // 04:00 local EST
    assert_eq!(
        keys,
        [
            "2024-11-03-00:00",
            "2024-11-03-01:00",
            "2024-11-03-02:00",
            "2024-11-03-03:00"
        ]
    );
    let w = fall
        .time_window("2024-11-03-01:00")
        .expect("ok")
        .expect("window");
    assert_eq!(
        (w.end - w.start).num_hours(),
        2,
        "the repeated hour belongs to one partition"
    );
}

#[test]
fn static_multi_and_dynamic_keys() {
    let regions = PartitionsDefinition::static_keys(["eu", "us"]);
    assert_eq!(
        regions.keys(&at(2024, 1, 1, 0)).expect("keys"),
        ["eu", "us"]
    );
    let multi = PartitionsDefinition::multi([
        ("region", regions.clone()),
        ("date", PartitionsDefinition::daily("2024-09-01")),
    ]);
    let ctx = at(2024, 9, 3, 0);
    assert_eq!(
        multi.keys(&ctx).expect("keys"),
        [
            "2024-09-01|eu",
            "2024-09-01|us",
            "2024-09-02|eu",
            "2024-09-02|us"
        ]
    );
    assert!(multi.has_key("2024-09-02|us", &ctx).expect("ok"));
    assert!(!multi.has_key("2024-09-02|asia", &ctx).expect("ok"));
    assert!(!multi.has_key("2024-09-02", &ctx).expect("ok"));
    let w = multi
        .time_window("2024-09-02|eu")
        .expect("ok")
        .expect("time dimension");
    assert_eq!(w.start.to_rfc3339(), "2024-09-02T00:00:00+00:00");

    let dynamic = PartitionsDefinition::dynamic("customers");
    let mut ctx = at(2024, 1, 1, 0);
    assert!(dynamic.keys(&ctx).expect("keys").is_empty());
    ctx.dynamic
        .insert("customers".into(), vec!["acme".into(), "globex".into()]);
    assert_eq!(dynamic.keys(&ctx).expect("keys"), ["acme", "globex"]);
}

#[test]
fn invalid_definitions_say_what_is_wrong() {
    let cases = [
        (PartitionsDefinition::daily("2024-13-01"), "is not a date"),
        (
            PartitionsDefinition::daily("2024-09-01").timezone("Mars/Olympus"),
            "unknown timezone `Mars/Olympus`",
        ),
        (
            PartitionsDefinition::monthly("2024-09-15"),
            "use the 1st of a month",
        ),
        (
            PartitionsDefinition::daily("2024-09-01").end("2024-08-01"),
            "is not after the start",
        ),
        (
            PartitionsDefinition::daily("2024-09-01").format("%Y-%m"),
            "does not identify a Daily window",
        ),
        (
            PartitionsDefinition::daily("2024-09-01").format("%Y,%m,%d"),
            "keys may not contain `,` or `|`",
        ),
        (
            PartitionsDefinition::static_keys(["a", "a"]),
            "listed twice",
        ),
        (PartitionsDefinition::static_keys(["a|b"]), "contains `|`"),
        (
            PartitionsDefinition::multi([("x", PartitionsDefinition::static_keys(["a"]))]),
            "exactly two dimensions",
        ),
    ];
    for (def, expected) in cases {
        let e = def.validate().expect_err("invalid").to_string();
        assert!(e.contains(expected), "{def:?}: {e}");
    }
    let daily = PartitionsDefinition::daily("2024-09-01");
    let e = daily
        .time_window("09/01/2024")
        .expect_err("bad key")
        .to_string();
    assert!(e.contains("does not match the format `%Y-%m-%d`"), "{e}");
}

fn set(keys: &[&str]) -> std::collections::BTreeSet<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

#[test]
fn mappings() {
    let ctx = at(2024, 10, 3, 0);
    let daily = PartitionsDefinition::daily("2024-09-01");
    let monthly = PartitionsDefinition::monthly("2024-09-01");
    let k = |keys: &[&str]| keys.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    // Identity.
    let m = PartitionMapping::default_for(Some(&daily), &daily);
    assert_eq!(m, PartitionMapping::Identity);
    assert_eq!(
        m.upstream_keys(&k(&["2024-09-05"]), Some(&daily), &daily, &ctx)
            .expect("ok"),
        set(&["2024-09-05"])
    );

    // Previous day; nothing before the first day.
    let prev = PartitionMapping::previous_window();
    assert_eq!(
        prev.upstream_keys(&k(&["2024-09-05"]), Some(&daily), &daily, &ctx)
            .expect("ok"),
        set(&["2024-09-04"])
    );
    assert!(
        prev.upstream_keys(&k(&["2024-09-01"]), Some(&daily), &daily, &ctx)
            .expect("ok")
            .is_empty()
    );

    // Coarsening: a month needs each of its days; a day needs its month.
    let coarse = PartitionMapping::default_for(Some(&monthly), &daily);
    let days = coarse
        .upstream_keys(&k(&["2024-09-01"]), Some(&monthly), &daily, &ctx)
        .expect("ok");
    assert_eq!(days.len(), 30);
    assert!(
        days.contains("2024-09-01") && days.contains("2024-09-30") && !days.contains("2024-10-01")
    );
    let month = coarse
        .upstream_keys(&k(&["2024-09-17"]), Some(&daily), &monthly, &ctx)
        .expect("ok");
    assert_eq!(month, set(&["2024-09-01"]));

    // All partitions for an unpartitioned downstream.
    let all = PartitionMapping::default_for(None, &monthly);
    assert_eq!(
        all.upstream_keys(&[], None, &monthly, &ctx).expect("ok"),
        set(&["2024-09-01"])
    );

    // Static.
    let regions = PartitionsDefinition::static_keys(["eu-west", "eu-east", "us"]);
    let zones = PartitionsDefinition::static_keys(["eu", "us"]);
    let st = PartitionMapping::static_pairs([("eu-west", "eu"), ("eu-east", "eu"), ("us", "us")]);
    assert_eq!(
        st.upstream_keys(&k(&["eu"]), Some(&zones), &regions, &ctx)
            .expect("ok"),
        set(&["eu-east", "eu-west"])
    );

    // Multi <-> single dimension.
    let multi = PartitionsDefinition::multi([("date", daily.clone()), ("region", zones.clone())]);
    let m = PartitionMapping::default_for(Some(&zones), &multi);
    assert_eq!(
        m,
        PartitionMapping::MultiToSingleDimension {
            dimension: "region".into()
        }
    );
    let ups = m
        .upstream_keys(&k(&["eu"]), Some(&zones), &multi, &ctx)
        .expect("ok");
    assert_eq!(ups.len(), 32, "every day of the eu region");
    assert!(ups.iter().all(|u| u.ends_with("|eu")));
    let m = PartitionMapping::default_for(Some(&multi), &daily);
    assert_eq!(
        m,
        PartitionMapping::MultiToSingleDimension {
            dimension: "date".into()
        }
    );
    assert_eq!(
        m.upstream_keys(&k(&["2024-09-02|us"]), Some(&multi), &daily, &ctx)
            .expect("ok"),
        set(&["2024-09-02"])
    );
}
