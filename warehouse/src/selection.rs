//! dbt node selection (`--select` / `--exclude`) over a manifest, in the engine's grammar
//! (see `rainbow_engine::selection`): whitespace is union, comma intersection, `+x` / `x+`
//! (with optional depth) walk the ref graph. Methods: `*`, a name (with `*` globs), `tag:`,
//! `path:` (a file or folder prefix), `config.materialized:`, `resource_type:`
//! (`model|seed|snapshot|test`), `test_name:`. Tests are also selected when the node they
//! test is (dbt's eager indirect selection). A selector that matches nothing is an error.

use std::collections::{HashMap, HashSet};

use rainbow_sql::{DataTest, Manifest, NodeKind};
use serde_json::Value as Json;

use crate::error::{Result, WarehouseError};

/// Selection over one compiled project.
pub struct Selection<'a> {
    manifest: &'a Manifest,
    tests: &'a [DataTest],
    index: HashMap<&'a str, usize>,
    children: Vec<Vec<usize>>,
}

fn bad(selector: &str, message: impl Into<String>) -> WarehouseError {
    WarehouseError::Selection {
        selector: selector.to_owned(),
        message: message.into(),
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len()).any(|i| {
                    text.is_char_boundary(head.len() + i) && glob(tail, &text[head.len() + i..])
                })
        }
    }
}

impl<'a> Selection<'a> {
    /// Indexes the manifest's nodes and tests.
    pub fn new(manifest: &'a Manifest, tests: &'a [DataTest]) -> Self {
        let index: HashMap<&str, usize> = manifest
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let mut children = vec![Vec::new(); manifest.nodes.len()];
        for (i, n) in manifest.nodes.iter().enumerate() {
            for r in &n.refs {
                if let Some(&p) = index.get(r.as_str()) {
                    children[p].push(i);
                }
            }
        }
        Selection {
            manifest,
            tests,
            index,
            children,
        }
    }

    /// Names of the selected nodes and tests: everything when `select` is empty, minus
    /// `exclude`.
    pub fn resolve(&self, select: &[String], exclude: &[String]) -> Result<HashSet<String>> {
        let mut selected: HashSet<String> = if select.is_empty() {
            self.manifest
                .nodes
                .iter()
                .map(|n| n.name.clone())
                .chain(self.tests.iter().map(|t| t.name.clone()))
                .collect()
        } else {
            let mut s = HashSet::new();
            for e in select {
                s.extend(self.expression(e)?);
            }
            s
        };
        for e in exclude {
            for name in self.expression(e)? {
                selected.remove(&name);
            }
        }
        Ok(selected)
    }

    fn expression(&self, expression: &str) -> Result<HashSet<String>> {
        let mut union = HashSet::new();
        for part in expression.split_whitespace() {
            let mut inter: Option<HashSet<String>> = None;
            for atom in part.split(',') {
                let set = self.atom(atom)?;
                inter = Some(match inter {
                    None => set,
                    Some(i) => i.intersection(&set).cloned().collect(),
                });
            }
            union.extend(inter.unwrap_or_default());
        }
        Ok(union)
    }

    fn atom(&self, atom: &str) -> Result<HashSet<String>> {
        let (up, rest) = match atom.find('+') {
            Some(i) if atom[..i].chars().all(|c| c.is_ascii_digit()) => {
                let depth = atom[..i].parse::<usize>().ok();
                (Some(depth), &atom[i + 1..])
            }
            _ => (None, atom),
        };
        let (method, down) = match rest.rfind('+') {
            Some(i) if rest[i + 1..].chars().all(|c| c.is_ascii_digit()) => {
                (&rest[..i], Some(rest[i + 1..].parse::<usize>().ok()))
            }
            _ => (rest, None),
        };
        let mut nodes: HashSet<usize> = HashSet::new();
        let mut tests: HashSet<String> = HashSet::new();
        let node_matches = |f: &dyn Fn(&rainbow_sql::Node) -> bool| -> HashSet<usize> {
            self.manifest
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| f(n))
                .map(|(i, _)| i)
                .collect()
        };
        match method.split_once(':') {
            None if method == "*" => nodes = node_matches(&|_| true),
            None => {
                nodes = node_matches(&|n| glob(method, &n.name));
                tests.extend(
                    self.tests
                        .iter()
                        .filter(|t| glob(method, &t.name))
                        .map(|t| t.name.clone()),
                );
            }
            Some(("tag", tag)) => {
                nodes = node_matches(&|n| match n.config.get("tags") {
                    Some(Json::Array(t)) => t.iter().any(|v| v.as_str() == Some(tag)),
                    Some(Json::String(t)) => t == tag,
                    _ => false,
                })
            }
            Some(("path", path)) => {
                let path = path.trim_end_matches('/');
                nodes = node_matches(&|n| n.path == path || n.path.starts_with(&format!("{path}/")))
            }
            Some(("config.materialized", m)) => nodes = node_matches(&|n| n.materialized() == m),
            Some(("resource_type", kind)) => {
                let kind = match kind {
                    "model" => NodeKind::Model,
                    "seed" => NodeKind::Seed,
                    "snapshot" => NodeKind::Snapshot,
                    "test" => {
                        tests.extend(self.tests.iter().map(|t| t.name.clone()));
                        NodeKind::Test
                    }
                    other => {
                        return Err(bad(
                            atom,
                            format!(
                                "unknown resource_type `{other}` (model, seed, snapshot, test)"
                            ),
                        ));
                    }
                };
                if kind != NodeKind::Test {
                    nodes = node_matches(&|n| n.kind == kind);
                }
            }
            Some(("test_name", name)) => tests.extend(
                self.tests
                    .iter()
                    .filter(|t| glob(name, &t.test))
                    .map(|t| t.name.clone()),
            ),
            Some((other, _)) => {
                return Err(bad(
                    atom,
                    format!(
                        "unknown selector method `{other}:` (tag:, path:, config.materialized:, resource_type:, test_name:)"
                    ),
                ));
            }
        }
        if nodes.is_empty() && tests.is_empty() {
            return Err(bad(atom, "matches no node"));
        }
        let walk =
            |start: &HashSet<usize>, depth: Option<usize>, next: &dyn Fn(usize) -> Vec<usize>| {
                let mut seen = start.clone();
                let mut frontier: Vec<usize> = start.iter().copied().collect();
                let mut level = 0;
                while !frontier.is_empty() && depth.is_none_or(|d| level < d) {
                    let mut new = Vec::new();
                    for i in frontier {
                        for j in next(i) {
                            if seen.insert(j) {
                                new.push(j);
                            }
                        }
                    }
                    frontier = new;
                    level += 1;
                }
                seen
            };
        let mut all = nodes.clone();
        if let Some(depth) = up {
            all.extend(walk(&nodes, depth, &|i| {
                self.manifest.nodes[i]
                    .refs
                    .iter()
                    .filter_map(|r| self.index.get(r.as_str()).copied())
                    .collect()
            }));
        }
        if let Some(depth) = down {
            all.extend(walk(&nodes, depth, &|i| self.children[i].clone()));
        }
        let names: HashSet<String> = all
            .iter()
            .map(|&i| self.manifest.nodes[i].name.clone())
            .collect();
        // Eager indirect selection: the tests of selected nodes.
        tests.extend(
            self.tests
                .iter()
                .filter(|t| names.contains(&t.model))
                .map(|t| t.name.clone()),
        );
        Ok(names.into_iter().chain(tests).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("stg_*", "stg_orders"));
        assert!(glob("*orders", "stg_orders"));
        assert!(!glob("stg_*", "fct_orders"));
        assert!(glob("*", ""));
    }
}
