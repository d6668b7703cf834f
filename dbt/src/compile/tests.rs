//! Unit tests of parsing and compiling: configs, refs, sources, macros, errors with positions.

use std::path::Path;

use super::*;
use crate::project::Project;

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

fn shop() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let r = dir.path();
    write(
        r,
        "dbt_project.yml",
        "name: shop\nprofile: shop\nvars:\n  min_amount: 5\nmodels:\n  shop:\n    +materialized: view\n    staging:\n      +schema: staging\n      +tags: [stg]\n    marts:\n      +materialized: table\n",
    );
    write(
        r,
        "models/staging/schema.yml",
        "version: 2\nsources:\n  - name: raw\n    tables:\n      - name: orders\n      - name: customers\nmodels:\n  - name: stg_orders\n    description: Cleaned orders\n    columns:\n      - name: id\n        tests: [unique, not_null]\n      - name: status\n        data_tests:\n          - accepted_values:\n              values: ['paid', 'refunded']\n",
    );
    write(
        r,
        "models/staging/stg_orders.sql",
        "select id, status, amount\nfrom {{ source('raw', 'orders') }}\nwhere amount > {{ var('min_amount') }}\n",
    );
    write(
        r,
        "models/marts/fact.sql",
        "{{ config(materialized='incremental', unique_key=['id', 'status']) }}\n{%- set cols = ['id', 'status'] %}\nselect {% for c in cols %}{{ c }}, {% endfor %}{{ cents('amount') }} as amount\nfrom {{ ref('stg_orders') }}\n{% if is_incremental() %}where id > (select max(id) from {{ this }}){% endif %}\n",
    );
    write(
        r,
        "macros/cents.sql",
        "{% macro cents(col) %}{{ adapter.dispatch('cents')(col) }}{% endmacro %}\n{% macro default__cents(col) %}({{ col }} / 100){% endmacro %}\n{% macro datafusion__cents(col) %}CAST({{ col }} AS DOUBLE) / 100{% endmacro %}\n",
    );
    write(r, "seeds/countries.csv", "code,name\nvn,Vietnam\n");
    write(
        r,
        "tests/assert_positive.sql",
        "select * from {{ ref('fact') }} where amount < 0\n",
    );
    dir
}

fn names(m: &Manifest) -> Vec<&str> {
    m.nodes.iter().map(|n| n.name.as_str()).collect()
}

#[test]
fn parses_the_dag_with_folder_and_inline_configs() {
    let dir = shop();
    let project = Project::load(dir.path()).expect("load");
    assert_eq!(project.sources[0].tables, ["orders", "customers"]);
    assert_eq!(project.descriptions["stg_orders"], "Cleaned orders");
    let tests: Vec<(&str, Option<&str>)> = project
        .column_tests
        .iter()
        .map(|t| (t.name.as_str(), t.column.as_deref()))
        .collect();
    assert_eq!(
        tests,
        [
            ("unique", Some("id")),
            ("not_null", Some("id")),
            ("accepted_values", Some("status"))
        ]
    );
    assert_eq!(
        project.column_tests[2].args["values"],
        serde_json::json!(["paid", "refunded"])
    );

    let m = parse(&project, &CompileOptions::default()).expect("parse");
    let order = names(&m);
    let pos = |n: &str| order.iter().position(|x| *x == n).expect("present");
    assert!(
        pos("stg_orders") < pos("fact") && pos("fact") < pos("assert_positive"),
        "{order:?}"
    );
    let stg = &m.nodes[pos("stg_orders")];
    assert_eq!(
        (stg.materialized(), stg.schema.as_str()),
        ("view", "main_staging")
    );
    assert_eq!(stg.config["tags"], serde_json::json!(["stg"]));
    assert_eq!(stg.sources, [("raw".to_owned(), "orders".to_owned())]);
    let fact = &m.nodes[pos("fact")];
    assert_eq!(
        fact.materialized(),
        "incremental",
        "the file's config() wins over the folder's table"
    );
    assert_eq!(
        fact.config["unique_key"],
        serde_json::json!(["id", "status"])
    );
    assert_eq!(fact.refs, ["stg_orders"]);
    assert_eq!(m.nodes[pos("countries")].kind, NodeKind::Seed);
}

#[test]
fn compiles_relations_dispatched_macros_and_incremental_filters() {
    let dir = shop();
    let project = Project::load(dir.path()).expect("load");
    let options = CompileOptions::default();
    let mut m = parse(&project, &options).expect("parse");
    let out = dir.path().join("target");
    compile(&mut m);
    write_target(&m, &out).expect("write");
    let sql = |m: &Manifest, n: &str| {
        m.nodes
            .iter()
            .find(|x| x.name == n)
            .and_then(|x| x.compiled.clone())
            .expect("compiled")
    };
    assert_eq!(
        sql(&m, "stg_orders"),
        "select id, status, amount\nfrom raw.orders\nwhere amount > 5"
    );
    let fact = sql(&m, "fact");
    assert!(
        fact.contains("select id, status, CAST(amount AS DOUBLE) / 100 as amount"),
        "{fact}"
    );
    assert!(fact.contains("from main_staging.stg_orders"), "{fact}");
    assert!(!fact.contains("where id >"), "not incremental yet: {fact}");
    assert!(out.join("compiled/shop/models/marts/fact.sql").exists());
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["project"], "shop");

    // BigQuery target: the default__ macro; incremental: the filter on {{ this }}; --vars override.
    let options = CompileOptions {
        target_type: "bigquery".into(),
        incremental: ["fact".to_owned()].into(),
        vars: [("min_amount".to_owned(), serde_json::json!(50))].into(),
        ..CompileOptions::default()
    };
    let mut m = parse(&project, &options).expect("parse");
    compile(&mut m);
    let fact = sql(&m, "fact");
    assert!(
        fact.contains("(amount / 100)")
            && fact.contains("where id > (select max(id) from main.fact)"),
        "{fact}"
    );
    assert!(sql(&m, "stg_orders").ends_with("> 50"));
}

#[test]
fn folder_configs_apply_per_resource_and_accumulate_tags() {
    let dir = shop();
    let r = dir.path();
    write(
        r,
        "dbt_project.yml",
        "name: shop\nmodel-paths: [dbt/models]\nvars:\n  min_amount: 5\nmodels:\n  shop:\n    +tags: [nightly]\n    events:\n      +materialized: incremental\n      +tags: events\n      +post-hook: vacuum\nseeds:\n  shop:\n    +schema: raw\n",
    );
    std::fs::create_dir_all(r.join("dbt")).expect("mkdir");
    std::fs::rename(r.join("models"), r.join("dbt/models")).expect("move");
    // Incremental from the folder only; another model sets it after asking.
    write(
        r,
        "dbt/models/events/clicks.sql",
        "{{ config(tags=['clicks']) }}select 1 as id{% if is_incremental() %} where id > (select max(id) from {{ this }}){% endif %}",
    );
    write(
        r,
        "dbt/models/late.sql",
        "select 2 as id{% if is_incremental() %} where true{% endif %}\n{{ config(materialized='incremental') }}",
    );
    // The folder says incremental, the file says table after asking: not incremental.
    write(
        r,
        "dbt/models/events/late_table.sql",
        "select 3 as id{% if is_incremental() %} where false{% endif %}{% if ref('clicks') == ref('clicks') and this != ref('clicks') %} -- same{% endif %}\n{{ config(materialized='table', post_hook='analyze') }}",
    );
    // A private macro, used directly and through a public one.
    write(
        r,
        "macros/private.sql",
        "{% macro _quote(x) %}'{{ x }}'{% endmacro %}\n{% macro quoted(x) %}{{ _quote(x) }}{% endmacro %}\n",
    );
    write(
        r,
        "dbt/models/names.sql",
        "select {{ quoted('a') }} as a, {{ _quote('b') }} as b",
    );
    let project = Project::load(r).expect("load");
    let options = CompileOptions {
        incremental: [
            "clicks".to_owned(),
            "late".to_owned(),
            "late_table".to_owned(),
        ]
        .into(),
        ..CompileOptions::default()
    };
    let mut m = parse(&project, &options).expect("parse");
    compile(&mut m);
    let node = |n: &str| m.nodes.iter().find(|x| x.name == n).expect("node");
    let clicks = node("clicks");
    assert_eq!(clicks.materialized(), "incremental");
    assert_eq!(
        clicks.config["tags"],
        serde_json::json!(["nightly", "events", "clicks"])
    );
    assert_eq!(
        clicks.compiled.as_deref(),
        Some("select 1 as id where id > (select max(id) from main.clicks)")
    );
    assert_eq!(
        node("late").compiled.as_deref(),
        Some("select 2 as id where true")
    );
    let late_table = node("late_table");
    assert_eq!(
        late_table.compiled.as_deref(),
        Some("select 3 as id -- same")
    );
    assert_eq!(
        (late_table.materialized(), &late_table.config["post_hook"]),
        ("table", &serde_json::json!(["vacuum", "analyze"]))
    );
    assert_eq!(
        node("names").compiled.as_deref(),
        Some("select 'a' as a, 'b' as b")
    );
    let seed = node("countries");
    assert_eq!(seed.schema, "main_raw", "the seeds: block, not models:");
    assert!(!seed.config.contains_key("tags"), "{:?}", seed.config);
}

fn error_of(files: &[(&str, &str)]) -> String {
    let dir = shop();
    for (path, text) in files {
        write(dir.path(), path, text);
    }
    let project = match Project::load(dir.path()) {
        Ok(p) => p,
        Err(e) => return e.to_string(),
    };
    match parse(&project, &CompileOptions::default()) {
        Ok(_) => "no error".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_name_the_file_line_and_column() {
    let e = error_of(&[(
        "models/marts/fact.sql",
        "select * from {{ ref('stg_order') }}",
    )]);
    assert_eq!(
        e,
        "models/marts/fact.sql: model `fact` refers to unknown `stg_order` (did you mean `stg_orders`?)"
    );
    let e = error_of(&[("models/x.sql", "select 1 from {{ source('raw', 'order') }}")]);
    assert!(
        e.contains("uses unknown source `raw.order` (did you mean `raw.orders`?)"),
        "{e}"
    );
    let e = error_of(&[
        ("models/a.sql", "{{ ref('b') }}"),
        ("models/b.sql", "{{ ref('a') }}"),
    ]);
    assert_eq!(e, "ref cycle: a -> b -> a");
    let e = error_of(&[("models/x.sql", "select 1\n\n  {{ ref('stg_orders') }\n")]);
    assert!(
        e.starts_with("models/x.sql:3:") && e.contains("syntax error"),
        "{e}"
    );
    // An undefined value prints as nothing (Jinja2's, as dbt renders); using it is an error.
    let e = error_of(&[("models/x.sql", "select\n  {{ no_such_thing.column }}\n")]);
    assert!(
        e.starts_with("models/x.sql:2:") && e.contains("undefined"),
        "{e}"
    );
    let e = error_of(&[(
        "models/x.sql",
        "{{ exceptions.raise_compiler_error('amount must be cents') }}",
    )]);
    assert!(
        e.starts_with("models/x.sql:1:") && e.contains("amount must be cents"),
        "{e}"
    );
    let e = error_of(&[("models/x.sql", "select {{ var('nope') }}")]);
    assert!(e.contains("var(`nope`) is not defined"), "{e}");
    let e = error_of(&[(
        "macros/bad.sql",
        "{% macro oops() %}\n{{ 1 + }}\n{% endmacro %}",
    )]);
    assert!(
        e.starts_with("macros/bad.sql:2:"),
        "the macro's own file and line: {e}"
    );
    let e = error_of(&[(
        "models/staging/schema.yml",
        "version: 2\nsources:\n  - name: raw\n    tables: [\n",
    )]);
    assert!(e.contains("models/staging/schema.yml:"), "{e}");
    let e = error_of(&[
        ("models/staging/stg_orders2.sql", "select 1"),
        ("models/marts/stg_orders2.sql", "select 2"),
    ]);
    assert!(e.contains("`stg_orders2` is defined twice"), "{e}");
    let dir = tempfile::tempdir().expect("temp");
    let e = Project::load(dir.path())
        .expect_err("not a project")
        .to_string();
    assert!(e.contains("no dbt_project.yml"), "{e}");
}

#[test]
fn data_tests_compile_to_queries_returning_failing_rows() {
    let dir = shop();
    let r = dir.path();
    write(r, "models/staging/customers.sql", "select 1 as customer_id");
    write(
        r,
        "models/staging/more.yml",
        "version: 2\nmodels:\n  - name: fact\n    columns:\n      - name: amount\n        tests:\n          - positive\n          - not_null:\n              severity: warn\n              where: \"status = 'paid'\"\n      - name: id\n        data_tests:\n          - relationships:\n              to: ref('customers')\n              field: customer_id\n",
    );
    write(
        r,
        "tests/generic/positive.sql",
        "{% test positive(model, column_name) %}\nselect * from {{ model }} where {{ column_name }} <= 0\n{% endtest %}\n",
    );
    let project = Project::load(r).expect("load");
    assert_eq!(
        project.tests.len(),
        1,
        "tests/generic/ holds definitions, not singular tests"
    );
    let options = CompileOptions::default();
    let mut m = parse(&project, &options).expect("parse");
    compile(&mut m);
    let tests = crate::data_tests(&project, &m, &options).expect("tests");
    let by_name = |n: &str| {
        tests
            .iter()
            .find(|t| t.name == n)
            .unwrap_or_else(|| panic!("{n} in {tests:?}"))
    };
    assert_eq!(
        by_name("unique_stg_orders_id").sql,
        "select id as unique_field, count(*) as n_records from main_staging.stg_orders where id is not null group by id having count(*) > 1"
    );
    assert_eq!(
        by_name("not_null_stg_orders_id").sql,
        "select * from main_staging.stg_orders where id is null"
    );
    assert_eq!(
        by_name("accepted_values_stg_orders_status").sql,
        "select status as value_field, count(*) as n_records from main_staging.stg_orders where status not in ('paid', 'refunded') group by status"
    );
    let nn = by_name("not_null_fact_amount");
    assert_eq!(nn.severity, crate::Severity::Warn);
    assert_eq!(
        nn.sql,
        "select * from (select * from main.fact where status = 'paid') dbt_subquery where amount is null"
    );
    assert!(
        by_name("relationships_fact_id").sql.contains(
            "left join main_staging.customers as parent on child.id = parent.customer_id"
        )
    );
    assert_eq!(
        by_name("positive_fact_amount").sql,
        "select * from main.fact where amount <= 0"
    );
    let singular = by_name("assert_positive");
    assert_eq!(
        (singular.model.as_str(), singular.sql.as_str()),
        ("fact", "select * from main.fact where amount < 0")
    );

    // Bad test declarations are errors naming the test and the model.
    write(
        r,
        "models/staging/more.yml",
        "version: 2\nmodels:\n  - name: fact\n    columns:\n      - name: id\n        tests: [no_such_test]\n",
    );
    let project = Project::load(r).expect("load");
    let mut m = parse(&project, &options).expect("parse");
    compile(&mut m);
    let e = crate::data_tests(&project, &m, &options)
        .expect_err("unknown test")
        .to_string();
    assert!(
        e.contains("test `no_such_test` on `fact.id`")
            && e.contains("no generic test `no_such_test`"),
        "{e}"
    );
    write(
        r,
        "models/staging/more.yml",
        "version: 2\nmodels:\n  - name: fact\n    columns:\n      - name: id\n        tests: [accepted_values]\n",
    );
    let project = Project::load(r).expect("load");
    let e = crate::data_tests(&project, &m, &options)
        .expect_err("no values")
        .to_string();
    assert!(e.contains("needs `values: [...]`"), "{e}");
}

#[test]
fn model_level_custom_filtered_and_repeated_tests() {
    let dir = shop();
    let r = dir.path();
    write(r, "models/staging/customers.sql", "select 1 as customer_id");
    write(
        r,
        "models/staging/more.yml",
        "version: 2\nmodels:\n  - name: fact\n    tests:\n      - unique:\n          column_name: \"id || status\"\n      - not_empty:\n          tags: [smoke]\n          config:\n            severity: warn\n      - more_than:\n          other: ref('customers')\n    columns:\n      - name: id\n        tests:\n          - relationships:\n              to: ref('customers')\n              field: customer_id\n              where: \"status = 'paid'\"\n          - accepted_values:\n              values: [1, 2]\n              quote: false\n          - accepted_values:\n              values: [3]\n              quote: false\n          - not_null:\n              config:\n                enabled: false\n",
    );
    write(
        r,
        "macros/tests.sql",
        "{% test not_empty(model) %}select 1 where not exists (select 1 from {{ model }}) and exists (select 1 from {{ ref('customers') }}){% endtest %}\n{% test more_than(model, other) %}select 1 from {{ model }} having count(*) <= (select count(*) from {{ other }}){% endtest %}\n",
    );
    let project = Project::load(r).expect("load");
    let options = CompileOptions::default();
    let mut m = parse(&project, &options).expect("parse");
    compile(&mut m);
    let tests = crate::data_tests(&project, &m, &options).expect("tests");
    let sql = |n: &str| {
        tests
            .iter()
            .find(|t| t.name == n)
            .map(|t| (t.sql.as_str(), t.severity))
            .unwrap_or_else(|| panic!("{n} in {tests:?}"))
    };
    assert_eq!(
        sql("unique_fact_id_status").0,
        "select id || status as unique_field, count(*) as n_records from main.fact where id || status is not null group by id || status having count(*) > 1"
    );
    assert_eq!(
        sql("not_empty_fact"),
        (
            "select 1 where not exists (select 1 from main.fact) and exists (select 1 from main_staging.customers)",
            crate::Severity::Warn
        )
    );
    assert_eq!(
        sql("more_than_fact").0,
        "select 1 from main.fact having count(*) <= (select count(*) from main_staging.customers)"
    );
    assert_eq!(
        sql("relationships_fact_id").0,
        "select child.id as from_field from (select * from main.fact where status = 'paid') child left join main_staging.customers as parent \
         on child.id = parent.customer_id where child.id is not null and parent.customer_id is null"
    );
    assert!(sql("accepted_values_fact_id").0.contains("not in (1, 2)"));
    assert!(sql("accepted_values_fact_id_2").0.contains("not in (3)"));
    assert!(
        !tests.iter().any(|t| t.name == "not_null_fact_id"),
        "a disabled test is not compiled"
    );

    // An argument the test does not declare is an error naming it.
    write(
        r,
        "models/staging/more.yml",
        "version: 2\nmodels:\n  - name: fact\n    tests:\n      - more_than:\n          othr: ref('customers')\n",
    );
    let project = Project::load(r).expect("load");
    let e = crate::data_tests(&project, &m, &options)
        .expect_err("unknown argument")
        .to_string();
    assert!(
        e.contains("argument `othr` is not a parameter") && e.contains("more.yml"),
        "{e}"
    );
    write(
        r,
        "models/staging/more.yml",
        "version: 2\nmodels:\n  - name: fact\n    tests:\n      - more_than:\n          other: ref('custmers')\n",
    );
    let project = Project::load(r).expect("load");
    let e = crate::data_tests(&project, &m, &options)
        .expect_err("unknown model")
        .to_string();
    assert!(
        e.contains("`other: ref('custmers')` names no known model"),
        "{e}"
    );
}

#[test]
fn relations_have_parts_python_methods_scoped_vars_and_snapshot_blocks() {
    let dir = shop();
    let r = dir.path();
    write(
        r,
        "dbt_project.yml",
        "name: shop\nvars:\n  min_amount: 5\n  region: eu\n  shop:\n    region: asia\nmodels:\n  shop:\n    staging:\n      +schema: staging\n",
    );
    write(
        r,
        "models/parts.sql",
        "{% set cols = {'a': 1, 'b': 2} %}select '{{ this.schema }}' as s, '{{ this.identifier }}' as t, '{{ ref('stg_orders').schema }}.{{ ref('stg_orders').identifier }}' as r, \
         '{{ var('region').upper() }}' as region{% for k, v in cols.items() %}, {{ v }} as {{ k }}{% endfor %}, {{ cols.get('c', 3) }} as c\nfrom {{ ref('stg_orders') }}",
    );
    write(
        r,
        "snapshots/orders_snapshot.sql",
        "{% snapshot orders_history %}\n{{ config(target_schema='snapshots', unique_key='id', strategy='check', check_cols='all') }}\nselect * from {{ source('raw', 'orders') }}\n{% endsnapshot %}\n",
    );
    let project = Project::load(r).expect("load");
    let mut m = parse(&project, &CompileOptions::default()).expect("parse");
    compile(&mut m);
    let node = |n: &str| m.nodes.iter().find(|x| x.name == n).expect("node");
    assert_eq!(
        node("parts").compiled.as_deref(),
        Some(
            "select 'main' as s, 'parts' as t, 'main_staging.stg_orders' as r, 'ASIA' as region, 1 as a, 2 as b, 3 as c\nfrom main_staging.stg_orders"
        )
    );
    let snap = node("orders_history");
    assert_eq!(
        (snap.kind, snap.schema.as_str(), snap.compiled.as_deref()),
        (
            NodeKind::Snapshot,
            "snapshots",
            Some("select * from raw.orders")
        )
    );
}

#[test]
fn ephemeral_models_are_inlined_as_ctes_transitively() {
    let dir = shop();
    let r = dir.path();
    write(
        r,
        "models/base.sql",
        "{{ config(materialized='ephemeral') }}\nselect id from {{ ref('stg_orders') }}",
    );
    write(
        r,
        "models/mid.sql",
        "{{ config(materialized='ephemeral') }}\nwith b as (select * from {{ ref('base') }}) select id from b",
    );
    write(
        r,
        "models/top.sql",
        "WITH x AS (select * from {{ ref('mid') }}) select * from x",
    );
    let project = Project::load(r).expect("load");
    let mut manifest = parse(&project, &CompileOptions::default()).expect("parse");
    compile(&mut manifest);
    let top = manifest
        .nodes
        .iter()
        .find(|n| n.name == "top")
        .and_then(|n| n.compiled.clone())
        .expect("top compiled");
    assert_eq!(
        top,
        "with __dbt__cte__base as (\nselect id from main_staging.stg_orders\n),\n__dbt__cte__mid as (\nwith b as (select * from __dbt__cte__base) select id from b\n),\nx AS (select * from __dbt__cte__mid) select * from x"
    );
}
