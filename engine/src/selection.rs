//! The asset selection language shared by every command (`--select`, `--exclude`, jobs).
//!
//! Grammar (dbt-style; whitespace is union, comma is intersection):
//!
//! ```text
//! selection    := intersection { WHITESPACE intersection }   -- union
//! intersection := atom { "," atom }                          -- intersection
//! atom         := [ [DEPTH] "+" ] method [ "+" [DEPTH] ]     -- "+x": x and all upstream,
//!                                                            -- "2+x": two levels up,
//!                                                            -- "x+" / "x+1": downstream
//!               | "@" method                                 -- x, all downstream, and all
//!                                                            -- upstream of those (dbt's @)
//! method       := "*"                                        -- every asset
//!               | "key:" PATTERN                             -- a key, `*` globs: raw/*
//!               | PATTERN                                    -- a key; else the first of the
//!                                                            -- `name`, `fqn`, `file`, `path`
//!                                                            -- attributes it matches (dbt's
//!                                                            -- default), or a check's name
//!               | "group:" NAME | "kind:" NAME | "owner:" NAME
//!               | "tag:" NAME [ "=" VALUE ]
//!               | METHOD ":" PATTERN                         -- a selection attribute
//! ```
//!
//! Selection attributes ([`crate::AssetSpec::selector`], [`crate::AssetCheckSpec::selector`])
//! extend the language per code location: a dbt project declares `path:`, `resource_type:`,
//! `config.materialized:`, `source:`, `test_name:` (dbt's node selection methods). An
//! attribute value matches when it equals the pattern, matches its `*` globs, or lies under it
//! as a path (`path:models/staging` matches `models/staging/stg_orders.sql`).
//!
//! A selection picks assets and checks ([`Selected`]): an atom may match checks directly (by
//! name or attribute), and every check of a selected asset is selected too (dbt's eager
//! indirect selection). `+`/`n+` walk assets only.
//!
//! `--exclude` takes the same language and is subtracted from the selection. A selector that
//! matches nothing (unknown key, group, tag, kind or owner; unknown method) is an error naming
//! it, never a silently empty selection.

use std::collections::{BTreeSet, VecDeque};

use crate::error::{Error, Result, did_you_mean};
use crate::graph::{AssetGraph, NodeId};

/// Adds `value` under `method` to a definition's selection attributes.
pub(crate) fn add_selector(
    selectors: &mut std::collections::BTreeMap<String, BTreeSet<String>>,
    method: String,
    value: String,
) {
    selectors.entry(method).or_default().insert(value);
}

/// The built-in selector methods (see the module docs for attributes).
const BUILTIN_METHODS: [&str; 5] = ["key", "group", "kind", "owner", "tag"];

/// A set of assets of one graph, as a bitmap over node ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSet {
    bits: Vec<bool>,
}

impl NodeSet {
    /// The empty set for a graph of `len` assets.
    pub fn empty(len: usize) -> Self {
        NodeSet {
            bits: vec![false; len],
        }
    }

    /// Every asset of a graph of `len` assets.
    pub fn full(len: usize) -> Self {
        NodeSet {
            bits: vec![true; len],
        }
    }

    /// Adds `id`; returns true if it was new.
    pub fn insert(&mut self, id: NodeId) -> bool {
        !std::mem::replace(&mut self.bits[id], true)
    }

    /// Membership.
    pub fn contains(&self, id: NodeId) -> bool {
        self.bits.get(id).copied().unwrap_or(false)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.bits.iter().filter(|b| **b).count()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        !self.bits.iter().any(|b| *b)
    }

    /// Members in id order.
    pub fn iter(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.bits
            .iter()
            .enumerate()
            .filter(|(_, b)| **b)
            .map(|(i, _)| i)
    }

    /// Adds every member of `other` (of the same graph).
    pub fn union_with(&mut self, other: &NodeSet) {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= *b;
        }
    }

    fn intersect_with(&mut self, other: &NodeSet) {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a &= *b;
        }
    }

    fn subtract(&mut self, other: &NodeSet) {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a &= !*b;
        }
    }
}

/// What a selection picks: assets to materialize and checks to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// Selected assets.
    pub assets: NodeSet,
    /// Selected checks, by index into [`AssetGraph::checks`].
    pub checks: NodeSet,
}

impl Selected {
    fn empty(graph: &AssetGraph) -> Self {
        Selected {
            assets: NodeSet::empty(graph.len()),
            checks: NodeSet::empty(graph.checks().len()),
        }
    }

    fn is_empty(&self) -> bool {
        self.assets.is_empty() && self.checks.is_empty()
    }

    fn union_with(&mut self, other: &Selected) {
        self.assets.union_with(&other.assets);
        self.checks.union_with(&other.checks);
    }

    fn intersect_with(&mut self, other: &Selected) {
        self.assets.intersect_with(&other.assets);
        self.checks.intersect_with(&other.checks);
    }

    /// Adds every check on a selected asset (dbt's eager indirect selection of the tests on
    /// a node; see [`AssetGraph::checks_reading`] for the tests that only read it).
    fn with_asset_checks(mut self, graph: &AssetGraph) -> Self {
        for node in self.assets.iter() {
            for &check in graph.check_ids_for(node) {
                self.checks.insert(check);
            }
        }
        self
    }
}

/// How far to walk the graph from an atom's matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    Unlimited,
    Levels(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Method {
    All,
    /// `key:PATTERN`: keys only.
    Key(String),
    /// A bare pattern: keys, else `name` attributes and check names.
    Name(String),
    Group(String),
    Tag(String, Option<String>),
    Kind(String),
    Owner(String),
    /// A selection attribute: `method:pattern`.
    Attribute(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Atom {
    text: String,
    up: Option<Depth>,
    down: Option<Depth>,
    /// `@x`: x, everything downstream, and everything upstream of those (dbt's "at"
    /// operator: what a rebuild of x's descendants needs).
    at: bool,
    method: Method,
}

/// A parsed selection expression: a union of intersections of atoms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetSelection {
    expression: String,
    union: Vec<Vec<Atom>>,
}

impl AssetSelection {
    /// Parses an expression; syntax errors name the offending part.
    pub fn parse(expression: &str) -> Result<Self> {
        let mut union = Vec::new();
        for term in expression.split_whitespace() {
            let mut intersection = Vec::new();
            for atom in term.split(',') {
                if atom.is_empty() {
                    return Err(Error::selection(term, "empty selector around `,`"));
                }
                intersection.push(parse_atom(atom)?);
            }
            union.push(intersection);
        }
        if union.is_empty() {
            return Err(Error::selection(
                expression,
                "the selection is empty; use `*` for every asset",
            ));
        }
        Ok(AssetSelection {
            expression: expression.to_owned(),
            union,
        })
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// Resolves the selection's assets against `graph`.
    pub fn resolve(&self, graph: &AssetGraph) -> Result<NodeSet> {
        Ok(self.resolve_with_checks(graph)?.assets)
    }

    /// Resolves the selection's assets and the checks its atoms name directly (not yet the
    /// checks of the selected assets).
    fn resolve_with_checks(&self, graph: &AssetGraph) -> Result<Selected> {
        let mut out = Selected::empty(graph);
        for intersection in &self.union {
            let mut acc: Option<Selected> = None;
            for atom in intersection {
                let set = resolve_atom(atom, graph)?;
                match &mut acc {
                    None => acc = Some(set),
                    Some(a) => a.intersect_with(&set),
                }
            }
            if let Some(a) = acc {
                out.union_with(&a);
            }
        }
        Ok(out)
    }
}

fn parse_depth(digits: &str, atom: &str) -> Result<Depth> {
    if digits.is_empty() {
        return Ok(Depth::Unlimited);
    }
    digits
        .parse::<usize>()
        .map(Depth::Levels)
        .map_err(|_| Error::selection(atom, format!("bad depth `{digits}`")))
}

fn parse_atom(atom: &str) -> Result<Atom> {
    let mut body = atom;
    let mut up = None;
    let mut down = None;
    let at = body.starts_with('@');
    if at {
        body = &body[1..];
        if body.starts_with(|c: char| c.is_ascii_digit() || c == '+') || body.ends_with('+') {
            return Err(Error::selection(
                atom,
                "`@` cannot be combined with `+` (it already includes up- and downstream)",
            ));
        }
    }

    // Leading `[N]+`: digits followed by '+'.
    let lead_digits = body.bytes().take_while(u8::is_ascii_digit).count();
    if body[lead_digits..].starts_with('+') {
        up = Some(parse_depth(&body[..lead_digits], atom)?);
        body = &body[lead_digits + 1..];
    }
    // Trailing `+[N]`.
    let trail_digits = body.bytes().rev().take_while(u8::is_ascii_digit).count();
    let before_digits = &body[..body.len() - trail_digits];
    if let Some(stripped) = before_digits.strip_suffix('+') {
        down = Some(parse_depth(&body[body.len() - trail_digits..], atom)?);
        body = stripped;
    }
    if body.is_empty() {
        return Err(Error::selection(
            atom,
            "expected an asset key or selector after `+`",
        ));
    }
    // Inside a method's value `+` is text (dbt: `config.incremental_strategy:delete+insert`).
    let value_start = body.find(':').map_or(0, |i| i + 1);
    if body[..value_start].contains('+') || (value_start == 0 && body.contains('+')) {
        return Err(Error::selection(
            atom,
            "`+` may only lead or trail a selector",
        ));
    }

    let method = if body == "*" {
        Method::All
    } else if let Some((name, value)) = body.split_once(':') {
        if value.is_empty() {
            return Err(Error::selection(atom, format!("`{name}:` needs a value")));
        }
        if name.is_empty() {
            return Err(Error::selection(
                atom,
                "a selector method is missing before `:`",
            ));
        }
        match name {
            "key" => Method::Key(value.to_owned()),
            "group" => Method::Group(value.to_owned()),
            "kind" => Method::Kind(value.to_owned()),
            "owner" => Method::Owner(value.to_owned()),
            "tag" => match value.split_once('=') {
                Some((k, v)) => Method::Tag(k.to_owned(), Some(v.to_owned())),
                None => Method::Tag(value.to_owned(), None),
            },
            other => Method::Attribute(other.to_owned(), value.to_owned()),
        }
    } else {
        Method::Name(body.to_owned())
    };
    Ok(Atom {
        text: atom.to_owned(),
        up,
        down,
        at,
        method,
    })
}

fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, rest) = (parts[0], &parts[1..]);
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let (last, middle) = match rest.split_last() {
        Some((last, middle)) => (*last, middle),
        None => return true,
    };
    for part in middle {
        match remaining.find(part) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// An attribute value matches a pattern when equal, by glob, or as a path under it.
fn attribute_match(pattern: &str, value: &str) -> bool {
    let folder = pattern.trim_end_matches('/');
    glob_match(pattern, value)
        || (!folder.is_empty()
            && value.len() > folder.len()
            && value.starts_with(folder)
            && value.as_bytes()[folder.len()] == b'/')
}

/// An atom's assets and checks: what it matches, walked, with the checks reading those assets
/// (so `orders,test_name:unique` is the unique tests of `orders`).
fn resolve_atom(atom: &Atom, graph: &AssetGraph) -> Result<Selected> {
    Ok(match_atom(atom, graph)?.with_asset_checks(graph))
}

fn match_atom(atom: &Atom, graph: &AssetGraph) -> Result<Selected> {
    let mut base = Selected::empty(graph);
    let nodes = graph.nodes();
    let checks = graph.checks();
    let not_found = |what: &str, value: &str, known: BTreeSet<&str>| {
        let listed: Vec<&str> = known.iter().copied().take(20).collect();
        let hint = if listed.is_empty() {
            format!("no asset has any {what}")
        } else {
            format!("known {what}s: {}", listed.join(", "))
        };
        Error::selection(
            &atom.text,
            format!("no asset has {what} `{value}` ({hint})"),
        )
    };
    let insert_nodes = |base: &mut Selected, hit: &dyn Fn(&crate::AssetSpec) -> bool| {
        for (id, node) in nodes.iter().enumerate() {
            if hit(&node.spec) {
                base.assets.insert(id);
            }
        }
    };
    match &atom.method {
        Method::All => base.assets = NodeSet::full(graph.len()),
        Method::Key(pattern) | Method::Name(pattern) if pattern.contains('*') => {
            insert_nodes(&mut base, &|spec| {
                glob_match(pattern, &spec.key.to_string())
            });
            if base.assets.is_empty() && matches!(atom.method, Method::Name(_)) {
                base = by_name(graph, pattern);
            }
            if base.is_empty() {
                return Err(Error::selection(
                    &atom.text,
                    format!("no asset key matches `{pattern}`"),
                ));
            }
        }
        Method::Key(key) | Method::Name(key) => {
            match graph.node_id(&crate::AssetKey::from(key.as_str())) {
                Some(id) => {
                    base.assets.insert(id);
                }
                None => {
                    if matches!(atom.method, Method::Name(_)) {
                        base = by_name(graph, key);
                    }
                    if base.is_empty() {
                        let keys: Vec<String> =
                            nodes.iter().map(|n| n.spec.key.to_string()).collect();
                        let names = nodes
                            .iter()
                            .flat_map(|n| n.spec.selectors.get("name").into_iter().flatten())
                            .chain(checks.iter().map(|c| &c.spec.name));
                        return Err(Error::selection(
                            &atom.text,
                            format!(
                                "unknown asset `{key}`{}",
                                did_you_mean(
                                    key,
                                    keys.iter()
                                        .map(String::as_str)
                                        .chain(names.map(String::as_str))
                                )
                            ),
                        ));
                    }
                }
            }
        }
        Method::Group(group) => {
            insert_nodes(&mut base, &|spec| spec.group.as_deref() == Some(group));
            if base.is_empty() {
                let known = nodes
                    .iter()
                    .filter_map(|n| n.spec.group.as_deref())
                    .collect();
                return Err(not_found("group", group, known));
            }
        }
        Method::Kind(kind) => {
            insert_nodes(&mut base, &|spec| spec.kinds.contains(kind));
            if base.is_empty() {
                let known = nodes
                    .iter()
                    .flat_map(|n| n.spec.kinds.iter().map(String::as_str))
                    .collect();
                return Err(not_found("kind", kind, known));
            }
        }
        Method::Owner(owner) => {
            insert_nodes(&mut base, &|spec| spec.owners.iter().any(|o| o == owner));
            if base.is_empty() {
                let known = nodes
                    .iter()
                    .flat_map(|n| n.spec.owners.iter().map(String::as_str))
                    .collect();
                return Err(not_found("owner", owner, known));
            }
        }
        Method::Tag(key, value) => {
            insert_nodes(&mut base, &|spec| match (spec.tags.get(key), value) {
                (Some(v), Some(want)) => v == want,
                (Some(_), None) => true,
                (None, _) => false,
            });
            if base.is_empty() {
                let shown = match value {
                    Some(v) => format!("{key}={v}"),
                    None => key.clone(),
                };
                let known = nodes
                    .iter()
                    .flat_map(|n| n.spec.tags.keys().map(String::as_str))
                    .collect();
                return Err(not_found("tag", &shown, known));
            }
        }
        Method::Attribute(method, pattern) => {
            let mut known_values: BTreeSet<&str> = BTreeSet::new();
            let mut method_known = false;
            for (id, node) in nodes.iter().enumerate() {
                if let Some(values) = node.spec.selectors.get(method) {
                    method_known = true;
                    known_values.extend(values.iter().map(String::as_str));
                    if values.iter().any(|v| attribute_match(pattern, v)) {
                        base.assets.insert(id);
                    }
                }
            }
            for (i, check) in checks.iter().enumerate() {
                if let Some(values) = check.spec.selectors.get(method) {
                    method_known = true;
                    known_values.extend(values.iter().map(String::as_str));
                    if values.iter().any(|v| attribute_match(pattern, v)) {
                        base.checks.insert(i);
                    }
                }
            }
            if !method_known {
                let methods: BTreeSet<&str> = BUILTIN_METHODS
                    .into_iter()
                    .chain(
                        nodes
                            .iter()
                            .flat_map(|n| n.spec.selectors.keys())
                            .chain(checks.iter().flat_map(|c| c.spec.selectors.keys()))
                            .map(String::as_str),
                    )
                    .collect();
                let listed: Vec<String> = methods.iter().map(|m| format!("{m}:")).collect();
                return Err(Error::selection(
                    &atom.text,
                    format!(
                        "unknown selector method `{method}:`{}; expected one of {}",
                        did_you_mean(method, methods.iter().copied()),
                        listed.join(", ")
                    ),
                ));
            }
            if base.is_empty() {
                return Err(Error::selection(
                    &atom.text,
                    format!(
                        "nothing has {method} `{pattern}`{}",
                        did_you_mean(pattern, known_values.iter().copied())
                    ),
                ));
            }
        }
    }

    let mut out = base.clone();
    if atom.at {
        let mut descendants = base.assets.clone();
        walk(
            graph,
            &base.assets,
            Depth::Unlimited,
            &mut descendants,
            |g, n| g.children(n),
        );
        out.assets = descendants.clone();
        walk(
            graph,
            &descendants,
            Depth::Unlimited,
            &mut out.assets,
            |g, n| g.parents(n),
        );
        return Ok(out);
    }
    if let Some(depth) = atom.up {
        walk(graph, &base.assets, depth, &mut out.assets, |g, n| {
            g.parents(n)
        });
    }
    if let Some(depth) = atom.down {
        walk(graph, &base.assets, depth, &mut out.assets, |g, n| {
            g.children(n)
        });
    }
    Ok(out)
}

/// The attributes a bare pattern is looked up in, in order, once it is no asset key: dbt's
/// default methods (a node's name, then its fqn, its file name, its path).
const DEFAULT_ATTRIBUTES: [&str; 4] = ["name", "fqn", "file", "path"];

/// Assets, and checks, matching `pattern` in the first of [`DEFAULT_ATTRIBUTES`] that any
/// matches (a check also by its own name).
fn by_name(graph: &AssetGraph, pattern: &str) -> Selected {
    let mut out = Selected::empty(graph);
    for attribute in DEFAULT_ATTRIBUTES {
        let hit = |selectors: &std::collections::BTreeMap<String, BTreeSet<String>>| {
            selectors.get(attribute).is_some_and(|values| {
                values.iter().any(|v| match attribute {
                    "name" => glob_match(pattern, v),
                    _ => attribute_match(pattern, v),
                })
            })
        };
        for (id, node) in graph.nodes().iter().enumerate() {
            if hit(&node.spec.selectors) {
                out.assets.insert(id);
            }
        }
        for (i, check) in graph.checks().iter().enumerate() {
            if (attribute == "name" && glob_match(pattern, &check.spec.name))
                || hit(&check.spec.selectors)
            {
                out.checks.insert(i);
            }
        }
        if !out.is_empty() {
            break;
        }
    }
    out
}

fn walk<'g>(
    graph: &'g AssetGraph,
    start: &NodeSet,
    depth: Depth,
    out: &mut NodeSet,
    next: impl Fn(&'g AssetGraph, NodeId) -> &'g [NodeId],
) {
    let limit = match depth {
        Depth::Unlimited => usize::MAX,
        Depth::Levels(n) => n,
    };
    let mut seen = start.clone();
    let mut queue: VecDeque<(NodeId, usize)> = start.iter().map(|n| (n, 0)).collect();
    while let Some((n, d)) = queue.pop_front() {
        if d >= limit {
            continue;
        }
        for &m in next(graph, n) {
            if seen.insert(m) {
                out.insert(m);
                queue.push_back((m, d + 1));
            }
        }
    }
}

impl AssetGraph {
    /// Resolves `select` (union of expressions; empty means every asset) minus `exclude`:
    /// the selected assets.
    pub fn select<S: AsRef<str>, E: AsRef<str>>(
        &self,
        select: &[S],
        exclude: &[E],
    ) -> Result<NodeSet> {
        Ok(self.select_with_checks(select, exclude)?.assets)
    }

    /// Resolves `select` minus `exclude` into assets and checks: the checks named by the
    /// selection plus every check of a selected asset, minus the checks named by `exclude` and
    /// the checks of excluded assets.
    pub fn select_with_checks<S: AsRef<str>, E: AsRef<str>>(
        &self,
        select: &[S],
        exclude: &[E],
    ) -> Result<Selected> {
        let mut selected = if select.is_empty() {
            Selected {
                assets: NodeSet::full(self.len()),
                checks: NodeSet::empty(self.checks().len()),
            }
        } else {
            let mut set = Selected::empty(self);
            for expr in select {
                set.union_with(&AssetSelection::parse(expr.as_ref())?.resolve_with_checks(self)?);
            }
            set
        }
        .with_asset_checks(self);
        for expr in exclude {
            let excluded = AssetSelection::parse(expr.as_ref())?
                .resolve_with_checks(self)?
                .with_asset_checks(self);
            selected.assets.subtract(&excluded.assets);
            selected.checks.subtract(&excluded.checks);
        }
        Ok(selected)
    }

    /// The checks that read any of `assets`: on them, or reading them as an additional dep
    /// (`dbt test --select orders` also runs the relationships test sitting on `customers`).
    pub fn checks_reading(&self, assets: &NodeSet) -> NodeSet {
        let mut out = NodeSet::empty(self.checks().len());
        for (i, check) in self.checks().iter().enumerate() {
            let reads = std::iter::once(&check.spec.asset).chain(&check.spec.additional_deps);
            if reads
                .filter_map(|k| self.node_id(k))
                .any(|n| assets.contains(n))
            {
                out.insert(i);
            }
        }
        out
    }

    /// Resolves a selection and returns the selected keys in topological order.
    pub fn select_keys<S: AsRef<str>, E: AsRef<str>>(
        &self,
        select: &[S],
        exclude: &[E],
    ) -> Result<Vec<crate::AssetKey>> {
        let set = self.select(select, exclude)?;
        Ok(self
            .topological_order()
            .iter()
            .filter(|&&n| set.contains(n))
            .map(|&n| self.node(n).spec.key.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_depth_operators() {
        let a = parse_atom("2+raw/orders+1").expect("parses");
        assert_eq!(a.up, Some(Depth::Levels(2)));
        assert_eq!(a.down, Some(Depth::Levels(1)));
        assert_eq!(a.method, Method::Name("raw/orders".into()));
        let a = parse_atom("+x+").expect("parses");
        assert_eq!(
            (a.up, a.down),
            (Some(Depth::Unlimited), Some(Depth::Unlimited))
        );
        // Keys may start with digits.
        let a = parse_atom("2024_orders").expect("parses");
        assert_eq!((a.up, a.method), (None, Method::Name("2024_orders".into())));
    }

    #[test]
    fn rejects_malformed_atoms() {
        for bad in ["+", "a+b", ":bar", "group:", "a,,b", "   "] {
            assert!(AssetSelection::parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("raw/*", "raw/orders"));
        assert!(glob_match("*orders", "raw/orders"));
        assert!(glob_match("r*/o*s", "raw/orders"));
        assert!(!glob_match("raw/*", "stg/orders"));
        assert!(!glob_match("a*a", "a"));
    }

    #[test]
    fn attributes_match_equal_glob_and_paths_under_a_folder() {
        assert!(attribute_match(
            "models/staging",
            "models/staging/stg_orders.sql"
        ));
        assert!(attribute_match(
            "models/staging/",
            "models/staging/stg_orders.sql"
        ));
        assert!(!attribute_match(
            "models/stag",
            "models/staging/stg_orders.sql"
        ));
        assert!(attribute_match("view", "view"));
        assert!(!attribute_match("view", "views"));
        assert!(attribute_match("unique*", "unique_combination"));
    }
}
