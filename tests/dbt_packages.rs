//! Real dbt projects unmodified, through the `rainbow` binary: packages (`rainbow deps` from a
//! git repository and a local directory; namespaced macros, `adapter.dispatch`, package
//! generic tests), dbt's built-in macros, a project's `generate_schema_name`, queries while
//! rendering, unit tests before their model; and dbt-labs/jaffle-shop with dbt_utils and
//! dbt_date, whose marts must equal, row for row, what dbt-duckdb builds from the same files
//! (the peer from PyPI, `RAINBOW_TEST_DBT_VENV`, installed by scripts/test.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;

const RAINBOW: &str = env!("CARGO_BIN_EXE_rainbow");

pub(crate) fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Runs `rainbow` in `dir` (its state under `dir/.rainbow`): success and stdout + stderr.
pub(crate) fn rainbow(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(RAINBOW)
        .args(args)
        .current_dir(dir)
        .env("RAINBOW_HOME", dir.join(".rainbow"))
        .env("RAINBOW_DBT_HUB", "http://127.0.0.1:9/api/v1")
        .output()
        .expect("runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A package as a git repository with two tagged versions (`file://` works offline).
fn git_package(root: &Path) -> PathBuf {
    let repo = root.join("shoplib-repo");
    write(
        &repo,
        "dbt_project.yml",
        "name: shoplib\nversion: '1.0.0'\nvars:\n  shoplib_currency: VND\n",
    );
    write(
        &repo,
        "macros/money.sql",
        "{% macro money(col) %}{{ return(adapter.dispatch('money', 'shoplib')(col)) }}{% endmacro %}\n{% macro default__money(col) %}cast({{ col }} as float64){% endmacro %}\n{% macro bigquery__money(col) %}round(cast({{ col }} as numeric) / 100, 2){% endmacro %}\n{% macro currency() %}{{ return(var('shoplib_currency')) }}{% endmacro %}\n",
    );
    write(
        &repo,
        "macros/tests.sql",
        "{% test positive(model, column_name) %}select * from {{ model }} where {{ column_name }} <= 0{% endtest %}\n",
    );
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "v1"]);
    git(&repo, &["tag", "1.0.0"]);
    // A later version the project does not ask for.
    write(
        &repo,
        "macros/money.sql",
        "{% macro money(col) %}broken({{ col }}){% endmacro %}\n",
    );
    git(&repo, &["commit", "-q", "-am", "v2"]);
    git(&repo, &["tag", "2.0.0"]);
    repo
}

/// Packages from git and a local directory, their macros by namespace and by dispatch (the
/// root project overriding one via `dispatch:`), a package generic test, dbt's built-in
/// macros, `generate_schema_name`, a query while rendering, and a failing unit test that
/// keeps its model from being built.
#[test]
fn packages_dispatch_builtins_and_unit_tests_on_a_project() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let repo = git_package(root);
    write(
        root,
        "locallib/dbt_project.yml",
        "name: locallib\nversion: '0.1.0'\n",
    );
    write(
        root,
        "locallib/macros/labels.sql",
        "{% macro label(col) %}{{ return(adapter.dispatch('label', 'locallib')(col)) }}{% endmacro %}\n{% macro default__label(col) %}upper({{ col }}){% endmacro %}\n",
    );
    let p = root.join("shop");
    write(
        &p,
        "dbt_project.yml",
        "name: shop\nprofile: shop\ndispatch:\n  - macro_namespace: locallib\n    search_order: ['shop', 'locallib']\nseeds:\n  shop:\n    +schema: raw\n",
    );
    write(
        &p,
        "packages.yml",
        &format!(
            "packages:\n  - git: 'file://{}'\n    revision: 1.0.0\n  - local: ../locallib\n",
            repo.display()
        ),
    );
    // The project's own schema naming: seeds into their custom schema as is.
    write(
        &p,
        "macros/generate_schema_name.sql",
        "{% macro generate_schema_name(custom_schema_name, node) -%}\n  {%- if node.resource_type == 'seed' and custom_schema_name is not none -%}{{ custom_schema_name | trim }}\n  {%- else -%}{{ target.schema }}{%- endif -%}\n{%- endmacro %}\n",
    );
    // Overrides locallib's label through dispatch's search order.
    write(
        &p,
        "macros/label.sql",
        "{% macro default__label(col) %}lower({{ col }}){% endmacro %}\n",
    );
    write(
        &p,
        "seeds/orders.csv",
        "id,amount_cents,kind,ordered_at\n1,12345,Food,2024-01-01 10:00:00\n2,500,Drink,2024-01-02 11:30:00\n3,99,Food,2024-01-02 12:00:00\n",
    );
    write(
        &p,
        "models/sales.sql",
        "{%- set n = run_query('select count(*) as n from ' ~ ref('orders')) -%}\nselect id, {{ shoplib.money('amount_cents') }} as amount, {{ locallib.label('kind') }} as kind,\n  '{{ shoplib.currency() }}' as currency, {{ dbt.date_trunc('day', 'ordered_at') }} as day,\n  {{ dbt.hash(dbt.concat(['kind', \"'-'\", 'id'])) }} as kind_key,\n  {{ n.columns[0].values()[0] if execute else 0 }} as orders_seen\nfrom {{ ref('orders') }}",
    );
    write(
        &p,
        "models/schema.yml",
        "version: 2\nmodels:\n  - name: sales\n    columns:\n      - name: amount\n        data_tests: [shoplib.positive]\nunit_tests:\n  - name: sales_amounts_are_in_major_units\n    model: sales\n    given:\n      - input: ref('orders')\n        rows:\n          - {id: 7, amount_cents: 250, kind: Food}\n    expect:\n      rows:\n        - {id: 7, amount: 2.5, kind: food}\n",
    );
    let (ok, out) = rainbow(&p, &["deps"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Installed shoplib") && out.contains("Installed locallib"),
        "{out}"
    );
    let lock = std::fs::read_to_string(p.join("package-lock.yml")).expect("lock");
    assert!(
        lock.contains("revision:") && lock.contains("sha1_hash:"),
        "{lock}"
    );
    let (ok, out) = rainbow(&p, &["build"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Done. PASS=4 WARN=0 ERROR=0 SKIP=0 TOTAL=4"),
        "{out}"
    );
    assert!(out.contains("seed raw.orders"), "{out}");
    let (ok, out) = rainbow(
        &p,
        &[
            "query",
            "select id, amount, kind, currency, day, kind_key, orders_seen from sales order by id",
            "--format",
            "csv",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "id,amount,kind,currency,day,kind_key,orders_seen",
            "1,123.45,food,VND,2024-01-01T00:00:00Z,56441d138fcc125cb4425f1130cb5626,3",
            "2,5.00,drink,VND,2024-01-02T00:00:00Z,d4d0d08ff2f811111d09c307b09ffbea,3",
            "3,0.99,food,VND,2024-01-02T00:00:00Z,b88084b75b852cada5beba6389aec0b6,3",
        ]
    );
    // A unit test that fails keeps its model from being built, naming the differing rows.
    let schema = std::fs::read_to_string(p.join("models/schema.yml")).expect("schema");
    write(
        &p,
        "models/schema.yml",
        &schema.replace("amount: 2.5", "amount: 25"),
    );
    write(
        &p,
        "models/sales.sql",
        "select 1 as id, 0.5 as amount, 'x' as kind from {{ ref('orders') }} where false",
    );
    let (ok, out) = rainbow(&p, &["build", "--select", "sales"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("unit_test sales_amounts_are_in_major_units"),
        "{out}"
    );
    assert!(out.contains("- 25.0 | 7 | food"), "{out}");
    let (_, out) = rainbow(
        &p,
        &["query", "select count(*) from sales", "--format", "csv"],
    );
    assert!(out.contains("\n3"), "the old table is kept: {out}");
    // A hub package without the network fails saying so, and the packages stay installed.
    write(
        &p,
        "packages.yml",
        "packages:\n  - package: dbt-labs/dbt_utils\n    version: [\">=1.0.0\", \"<2.0.0\"]\n",
    );
    let (ok, out) = rainbow(&p, &["deps"]);
    assert!(!ok);
    assert!(
        out.contains("dbt-labs/dbt_utils") && out.contains("not reachable"),
        "{out}"
    );
    assert!(p.join("dbt_packages/shoplib/dbt_project.yml").exists());
}

/// A cell as both sides print it: numbers to 6 decimals (integers as such), times as
/// `YYYY-MM-DD HH:MM:SS[.ffffff]`, booleans and NULL as words.
pub(crate) fn normalized(v: &Json) -> String {
    match v {
        Json::Null => "NULL".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{}", f as i64)
            } else {
                format!("{f:.6}")
            }
        }
        // A decimal as text (BigQuery's NUMERIC in JSON): as the number.
        Json::String(s)
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
                && s.parse::<f64>().is_ok() =>
        {
            normalized(&serde_json::json!(s.parse::<f64>().unwrap_or(f64::NAN)))
        }
        Json::String(s) => {
            let t = s.trim_end_matches('Z').replacen('T', " ", 1);
            if t.len() >= 19 && t.as_bytes()[4] == b'-' && t.as_bytes()[13] == b':' {
                t.trim_end_matches(".000000").to_owned()
            } else {
                s.clone()
            }
        }
        other => other.to_string(),
    }
}

/// `actual` and `expected` hold the same rows (in any order) over `expected`'s columns, values
/// compared as [`normalized`].
pub(crate) fn assert_same_rows(model: &str, actual: &[Json], expected: &[Json]) {
    let columns: Vec<String> = expected
        .first()
        .and_then(Json::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_else(|| panic!("{model}: no expected rows"));
    let (a, e) = (rows_of(actual, &columns), rows_of(expected, &columns));
    assert_eq!(a.len(), e.len(), "{model}: row count");
    for (x, y) in a.iter().zip(&e) {
        assert_eq!(x, y, "{model}: columns {columns:?}");
    }
}

pub(crate) fn rows_of(json: &[Json], columns: &[String]) -> Vec<String> {
    let mut rows: Vec<String> = json
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| normalized(&r[c.as_str()]))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    rows.sort();
    rows
}

/// dbt-labs/jaffle-shop (with dbt_utils 1.3.3, dbt_date 0.17.1 and dbt-audit-helper in
/// dbt_packages/, as `dbt deps` installs them) seeds and builds unmodified — every data test
/// and unit test passing — and its marts equal dbt-duckdb's from the same files.
#[test]
fn jaffle_shop_with_packages_builds_like_dbt_duckdb() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jaffle-shop");
    let venv = std::env::var("RAINBOW_TEST_DBT_VENV").unwrap_or_else(|_| {
        panic!(
            "RAINBOW_TEST_DBT_VENV is not set: run the suite with scripts/test.sh, which installs \
             dbt-core and dbt-duckdb from PyPI into a venv (the peer this test compares with)"
        )
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let ours = dir.path().join("rainbow");
    let peer = dir.path().join("dbt");
    copy_dir(&fixture, &ours);
    copy_dir(&fixture, &peer);

    let (ok, out) = rainbow(&ours, &["seed", "--vars", "{\"load_source_data\": true}"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Done. PASS=6 WARN=0 ERROR=0 SKIP=0 TOTAL=6"),
        "{out}"
    );
    let (ok, out) = rainbow(&ours, &["build"]);
    assert!(ok, "{out}");
    // 13 models, 27 data tests (4 of them dbt_utils.expression_is_true), 3 unit tests: dbt's
    // own count for this project.
    assert!(
        out.contains("Done. PASS=43 WARN=0 ERROR=0 SKIP=0 TOTAL=43"),
        "{out}"
    );
    assert_eq!(out.matches("unit_test ").count(), 3, "{out}");

    write(
        &peer,
        "profiles/profiles.yml",
        &format!(
            "default:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: '{}'\n      threads: 2\n",
            dir.path().join("jaffle.duckdb").display()
        ),
    );
    let dbt = |args: &[&str]| {
        let out = Command::new(Path::new(&venv).join("bin/dbt"))
            .args(args)
            .args(["--profiles-dir", "profiles"])
            .current_dir(&peer)
            .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
            .output()
            .expect("dbt runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "dbt {args:?}:\n{text}");
        text
    };
    dbt(&["seed", "--vars", "{\"load_source_data\": true}"]);
    let built = dbt(&["build"]);
    assert!(built.contains("PASS=43"), "{built}");
    let script = format!(
        r#"
import datetime, decimal, duckdb, json
con = duckdb.connect('{}', read_only=True)
def cell(v):
    if isinstance(v, decimal.Decimal): return float(v)
    if isinstance(v, datetime.datetime): return v.isoformat(sep=' ')
    if isinstance(v, datetime.date): return v.isoformat()
    return v
out = {{}}
for m in ['customers', 'locations', 'order_items', 'orders', 'products', 'supplies', 'metricflow_time_spine']:
    cur = con.execute(f'select * from main.{{m}}')
    cols = [d[0] for d in cur.description]
    out[m] = [dict(zip(cols, map(cell, r))) for r in cur.fetchall()]
print(json.dumps(out))
"#,
        dir.path().join("jaffle.duckdb").display()
    );
    let py = Command::new(Path::new(&venv).join("bin/python"))
        .args(["-c", &script])
        .output()
        .expect("python runs");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let theirs: Json = serde_json::from_slice(&py.stdout).expect("json");

    for model in [
        "customers",
        "locations",
        "order_items",
        "orders",
        "products",
        "supplies",
    ] {
        let expected = theirs[model].as_array().expect("rows");
        let (ok, out) = rainbow(
            &ours,
            &[
                "query",
                &format!("select * from {model}"),
                "--format",
                "json",
            ],
        );
        assert!(ok, "{out}");
        let actual: Vec<Json> = serde_json::from_str(out.trim()).expect("json rows");
        assert_same_rows(model, &actual, expected);
    }
    // The time spine ends today (America/Los_Angeles, the project's dbt_date:time_zone): its
    // length comes from a query dbt_date runs while rendering.
    let spine = theirs["metricflow_time_spine"].as_array().expect("rows");
    let (ok, out) = rainbow(
        &ours,
        &[
            "query",
            "select count(*) as n, max(date_day) as last from metricflow_time_spine",
            "--format",
            "json",
        ],
    );
    assert!(ok, "{out}");
    let ours_spine: Vec<Json> = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(ours_spine[0]["n"], Json::from(spine.len()), "{out}");
    let last = spine
        .iter()
        .filter_map(|r| r["date_day"].as_str())
        .max()
        .expect("max");
    assert_eq!(normalized(&ours_spine[0]["last"]), last, "{out}");
}

/// dbt_utils' introspective macros, as the package ships them: `star` (columns at build, `*`
/// at parse — the model is rendered again when built), `get_column_values` (a statement
/// block), `union_relations` (`adapter.get_columns_in_relation`), `pivot`, `date_spine`,
/// `generate_surrogate_key`, `safe_add`, `safe_divide`.
#[test]
fn dbt_utils_introspective_macros_build() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    let utils = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jaffle-shop/dbt_packages/dbt_utils");
    copy_dir(&utils, &p.join("dbt_packages/dbt_utils"));
    write(p, "dbt_project.yml", "name: shop\nprofile: shop\n");
    write(
        p,
        "seeds/orders.csv",
        "id,amount_cents,kind,ordered_at\n1,12345,Food,2024-01-01 10:00:00\n2,500,Drink,2024-01-02 11:30:00\n3,99,Food,2024-01-02 12:00:00\n",
    );
    write(
        p,
        "seeds/returns.csv",
        "id,amount_cents,reason\n9,100,broken\n",
    );
    write(
        p,
        "models/star_except.sql",
        "select {{ dbt_utils.star(from=ref('orders'), except=['kind']) }} from {{ ref('orders') }}",
    );
    write(
        p,
        "models/kinds.sql",
        "{% set kinds = dbt_utils.get_column_values(table=ref('orders'), column='kind', order_by='kind') %}\nselect {% for k in kinds %}sum(case when kind = '{{ k }}' then amount_cents end) as {{ k | lower }}_cents{% if not loop.last %}, {% endif %}{% endfor %} from {{ ref('orders') }}",
    );
    write(
        p,
        "models/unioned.sql",
        "{{ dbt_utils.union_relations(relations=[ref('orders'), ref('returns')]) }}",
    );
    write(
        p,
        "models/spine.sql",
        "{{ dbt_utils.date_spine(datepart=\"day\", start_date=\"cast('2024-01-01' as date)\", end_date=\"cast('2024-01-08' as date)\") }}",
    );
    write(
        p,
        "models/pivoted.sql",
        "select id, {{ dbt_utils.pivot('kind', dbt_utils.get_column_values(ref('orders'), 'kind', order_by='kind')) }} from {{ ref('orders') }} group by id",
    );
    write(
        p,
        "models/keyed.sql",
        "select id, {{ dbt_utils.generate_surrogate_key(['id', 'kind']) }} as k, {{ dbt_utils.safe_add(['id', 'amount_cents']) }} as s, {{ dbt_utils.safe_divide('amount_cents', 'id') }} as d from {{ ref('orders') }}",
    );
    // Relations by pattern (BigQuery's INFORMATION_SCHEMA) and query results as a dict (agate's
    // `columns.items()`); `-- depends_on:` orders them after `orders`, as in dbt.
    write(
        p,
        "models/by_pattern.sql",
        "-- depends_on: {{ ref('orders') }}\n{% set rels = dbt_utils.get_relations_by_pattern('ma%', 'ord%') %}\nselect {{ rels | length }} as n, '{{ rels | join(',') }}' as names",
    );
    write(
        p,
        "models/as_dict.sql",
        "-- depends_on: {{ ref('orders') }}\n{% set d = dbt_utils.get_query_results_as_dict('select kind, count(*) as n from ' ~ ref('orders') ~ ' group by kind order by kind') %}\nselect '{{ d['kind'] | join('|') }}' as kinds, '{{ d['n'] | join('|') }}' as counts",
    );
    // Rendered again when built or run, wherever `execute` is read: an ephemeral model
    // (inlined into its consumer), a singular test, a package generic test.
    write(
        p,
        "models/eph_star.sql",
        "{{ config(materialized='ephemeral') }}\nselect {{ dbt_utils.star(ref('orders'), except=['kind']) }} from {{ ref('orders') }}",
    );
    write(
        p,
        "models/from_eph.sql",
        "select * from {{ ref('eph_star') }}",
    );
    write(
        p,
        "tests/star_columns.sql",
        "select {{ dbt_utils.star(ref('orders'), except=['kind']) }} from {{ ref('orders') }}\nexcept distinct\nselect id, amount_cents, ordered_at from {{ ref('orders') }}",
    );
    write(
        p,
        "models/schema.yml",
        "version: 2\nmodels:\n  - name: star_except\n    data_tests:\n      - dbt_utils.equal_rowcount:\n          compare_model: ref('orders')\n",
    );
    // dbt's config.get with a keyword default, list.sort(reverse=True), re.sub with `$`.
    write(
        p,
        "models/jinja_bits.sql",
        "{%- set l = [1, 3, 2] -%}{%- do l.sort(reverse=true) -%}\nselect '{{ config.get(\"owner\", default=\"unset\") }}' as owner, '{{ l | join(\"|\") }}' as sorted, '{{ modules.re.sub(\"USD\", \"$5\", \"USD 3\") }}' as price, {{ run_started_at.year > 2000 }} as dated, '{{ model.name }}|{{ model.unique_id }}|{{ project_name }}' as names, {{ invocation_id | length > 10 }} as invoked",
    );
    let (ok, out) = rainbow(p, &["build"]);
    assert!(ok, "{out}");
    assert!(out.contains("ERROR=0 SKIP=0"), "{out}");
    assert!(out.contains("PASS  test star_columns"), "{out}");
    assert!(
        out.contains("PASS  test dbt_utils_equal_rowcount_star_except"),
        "{out}"
    );
    let q = |sql: &str| {
        let (ok, out) = rainbow(p, &["query", sql, "--format", "csv"]);
        assert!(ok, "{out}");
        out.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(
        q("select * from star_except order by id"),
        [
            "id,amount_cents,ordered_at",
            "1,12345,2024-01-01T10:00:00",
            "2,500,2024-01-02T11:30:00",
            "3,99,2024-01-02T12:00:00"
        ]
    );
    assert_eq!(
        q("select * from kinds"),
        ["drink_cents,food_cents", "500,12444"]
    );
    // `rainbow compile` renders introspective models with the warehouse, as dbt compile.
    let (ok, out) = rainbow(p, &["compile"]);
    assert!(ok, "{out}");
    let kinds = std::fs::read_to_string(p.join("target/compiled/shop/models/kinds.sql"))
        .expect("compiled kinds");
    assert!(
        kinds.starts_with("select sum(case when kind = 'Drink'"),
        "{kinds}"
    );
    assert_eq!(q("select * from by_pattern"), ["n,names", "1,main.orders"]);
    assert_eq!(
        q("select * from as_dict"),
        ["kinds,counts", "Drink|Food,1|2"]
    );
    assert_eq!(
        q("select * from from_eph order by id limit 1"),
        ["id,amount_cents,ordered_at", "1,12345,2024-01-01T10:00:00"]
    );
    assert_eq!(
        q("select * from jinja_bits"),
        [
            "owner,sorted,price,dated,names,invoked",
            "unset,3|2|1,$5 3,true,jinja_bits|model.shop.jinja_bits|shop,true"
        ]
    );
    assert_eq!(
        q("select _dbt_source_relation, id, kind, reason from unioned order by id"),
        [
            "_dbt_source_relation,id,kind,reason",
            "main.orders,1,Food,",
            "main.orders,2,Drink,",
            "main.orders,3,Food,",
            "main.returns,9,,broken"
        ]
    );
    assert_eq!(
        q("select count(*), min(date_day), max(date_day) from spine"),
        [
            "count(*),min(spine.date_day),max(spine.date_day)",
            "7,2024-01-01T00:00:00,2024-01-07T00:00:00"
        ]
    );
    assert_eq!(
        q("select * from pivoted order by id"),
        ["id,Drink,Food", "1,0,1", "2,1,0", "3,0,1"]
    );
    assert_eq!(
        q("select k, s, d from keyed order by id"),
        [
            "k,s,d",
            "d23b4ed3c680b4389d80bc6ba0fe2743,12346,12345.0",
            "84b4098f3abd2c2d25bfe70c9ffd8442,502,250.0",
            "033a03b4ec4b33ff030f19889776164f,102,33.0"
        ]
    );
}

/// A package with models, a seed, a schema file (a test of its own, unqualified) and a macro
/// its models call unqualified: its nodes build with the project's, under the project's
/// config for the package (`models: {<package>: …}` over the package's own), and `ref`s cross
/// between them; `package:` selects them.
#[test]
fn a_package_with_models_and_seeds_builds_with_the_project() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    let pkg = p.join("dbt_packages/shoplib2");
    write(
        &pkg,
        "dbt_project.yml",
        "name: shoplib2\nversion: '1.0.0'\nmodels:\n  shoplib2:\n    +materialized: view\n",
    );
    write(
        &pkg,
        "macros/shout.sql",
        "{% macro shout(x) %}upper({{ x }}){% endmacro %}\n{% test positive(model, column_name) %}select * from {{ model }} where {{ column_name }} <= 0{% endtest %}\n",
    );
    write(&pkg, "seeds/pkg_seed.csv", "id,name\n1,lamp\n2,desk\n");
    write(
        &pkg,
        "models/pkg_orders.sql",
        "select id, {{ shout('name') }} as name from {{ ref('pkg_seed') }}",
    );
    write(
        &pkg,
        "models/schema.yml",
        "version: 2\nmodels:\n  - name: pkg_orders\n    columns:\n      - name: id\n        data_tests: [not_null, positive]\n",
    );
    write(
        p,
        "dbt_project.yml",
        "name: shop\nprofile: shop\nmodels:\n  shoplib2:\n    +materialized: table\n",
    );
    write(
        p,
        "models/uses_pkg.sql",
        "select id, name from {{ ref('shoplib2', 'pkg_orders') }} where id > 1",
    );
    let (ok, out) = rainbow(p, &["build"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Done. PASS=5 WARN=0 ERROR=0 SKIP=0 TOTAL=5"),
        "{out}"
    );
    assert!(
        out.contains("model main.pkg_orders") && out.contains("CREATE TABLE"),
        "{out}"
    );
    let (ok, out) = rainbow(p, &["query", "select * from uses_pkg", "--format", "csv"]);
    assert!(ok, "{out}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["id,name", "2,DESK"]);
    let (ok, out) = rainbow(p, &["run", "--select", "package:shoplib2"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Done. PASS=1 WARN=0 ERROR=0 SKIP=0 TOTAL=1"),
        "{out}"
    );
}
