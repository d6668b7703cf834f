//! dbt's YAML selectors (`selectors.yml`, `--selector NAME`): each definition turned into the
//! selection language's expressions — a union of intersections to select and one to exclude.
//! Source: docs.getdbt.com/reference/node-selection/yaml-selectors.
//!
//! A definition is a CLI string (`"tag:nightly +orders"`), a method/value mapping (`method`,
//! `value`, `parents`, `children`, `parents_depth`, `children_depth`, `childrens_parents`), its
//! shorthand (`tag: nightly`), `union:` / `intersection:` lists, `exclude:` (in a union, the
//! whole union minus it), or `method: selector` naming another selector. An intersection of
//! unions is distributed (`(a ∪ b) ∩ c = (a ∩ c) ∪ (b ∩ c)`); an exclusion anywhere but a
//! top-level union is refused by name (the selection language has no nested difference).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value as Json;

use crate::error::DbtError;

/// A union of intersections: each inner list is atoms joined by `,`.
type Union = Vec<Vec<String>>;

/// One YAML selector as selection expressions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// `--select` expressions (a union).
    pub select: Vec<String>,
    /// `--exclude` expressions (a union).
    pub exclude: Vec<String>,
    /// `default: true`: used when a verb has no `--select`/`--selector`.
    pub default: bool,
}

/// Reads `<root>/selectors.yml` (none: no selectors). Errors name the file and the selector.
pub fn load(root: &Path) -> Result<BTreeMap<String, Selector>, DbtError> {
    let path = root.join("selectors.yml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => return Err(DbtError::Io { path, source }),
    };
    let bad = |message: String| DbtError::Project {
        path: path.clone(),
        message,
    };
    let doc: Json = serde_norway::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let entries = doc
        .get("selectors")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("expected a `selectors:` list".into()))?;
    let mut definitions = BTreeMap::new();
    for e in entries {
        let name = e
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| bad("a selector without a `name`".into()))?;
        let definition = e
            .get("definition")
            .ok_or_else(|| bad(format!("selector `{name}`: no `definition`")))?;
        let default = e.get("default").and_then(Json::as_bool).unwrap_or(false);
        definitions.insert(name.to_owned(), (definition.clone(), default));
    }
    let mut out = BTreeMap::new();
    for (name, (definition, default)) in &definitions {
        let (select, exclude) = top(definition, &definitions, &mut vec![name.clone()])
            .map_err(|m| bad(format!("selector `{name}`: {m}")))?;
        out.insert(
            name.clone(),
            Selector {
                select: select.iter().map(|i| i.join(",")).collect(),
                exclude: exclude.iter().map(|i| i.join(",")).collect(),
                default: *default,
            },
        );
    }
    if out.values().filter(|s| s.default).count() > 1 {
        return Err(bad("more than one selector has `default: true`".into()));
    }
    Ok(out)
}

type Definitions = BTreeMap<String, (Json, bool)>;

/// A top-level definition: a union whose `exclude:` members are subtracted.
fn top(d: &Json, defs: &Definitions, seen: &mut Vec<String>) -> Result<(Union, Union), String> {
    if let Some(members) = d.get("union").and_then(Json::as_array) {
        let (mut select, mut exclude) = (Vec::new(), Vec::new());
        for m in members {
            match m.get("exclude") {
                Some(Json::Array(excluded)) => {
                    for x in excluded {
                        exclude.extend(set(x, defs, seen)?);
                    }
                }
                Some(_) => return Err("`exclude:` takes a list".into()),
                None => select.extend(set(m, defs, seen)?),
            }
        }
        return Ok((select, exclude));
    }
    if let Some(Json::Object(o)) = Some(d)
        && o.get("method").and_then(Json::as_str) == Some("selector")
    {
        let name = o.get("value").and_then(Json::as_str).unwrap_or("");
        return referenced(name, defs, seen, top);
    }
    Ok((set(d, defs, seen)?, Vec::new()))
}

fn referenced<T>(
    name: &str,
    defs: &Definitions,
    seen: &mut Vec<String>,
    f: impl Fn(&Json, &Definitions, &mut Vec<String>) -> Result<T, String>,
) -> Result<T, String> {
    if seen.iter().any(|s| s == name) {
        return Err(format!("selector `{name}` refers to itself"));
    }
    let (d, _) = defs
        .get(name)
        .ok_or_else(|| format!("no selector named `{name}`"))?;
    seen.push(name.to_owned());
    let out = f(d, defs, seen);
    seen.pop();
    out
}

/// A definition without exclusions, as a union of intersections.
fn set(d: &Json, defs: &Definitions, seen: &mut Vec<String>) -> Result<Union, String> {
    match d {
        Json::String(s) => Ok(s
            .split_whitespace()
            .map(|term| term.split(',').map(str::to_owned).collect())
            .collect()),
        Json::Object(o) => {
            if let Some(members) = o.get("union").and_then(Json::as_array) {
                let mut out = Vec::new();
                for m in members {
                    if m.get("exclude").is_some() {
                        return Err("`exclude:` is supported in the top-level union only".into());
                    }
                    out.extend(set(m, defs, seen)?);
                }
                return Ok(out);
            }
            if let Some(members) = o.get("intersection").and_then(Json::as_array) {
                let mut out: Union = vec![Vec::new()];
                for m in members {
                    if m.get("exclude").is_some() {
                        return Err("`exclude:` is supported in the top-level union only".into());
                    }
                    let term = set(m, defs, seen)?;
                    out = out
                        .iter()
                        .flat_map(|a| {
                            term.iter()
                                .map(move |b| a.iter().chain(b).cloned().collect())
                        })
                        .collect();
                }
                return Ok(out);
            }
            let (method, value) = match (o.get("method"), o.get("value")) {
                (Some(m), Some(v)) => (
                    m.as_str().ok_or("`method` must be text")?.to_owned(),
                    scalar(v)?,
                ),
                _ => {
                    // Shorthand `tag: nightly`: the one key that is not an operator.
                    let mut keys = o.iter().filter(|(k, _)| !OPERATORS.contains(&k.as_str()));
                    match (keys.next(), keys.next()) {
                        (Some((k, v)), None) => (k.clone(), scalar(v)?),
                        _ => return Err(format!("cannot read the definition {d}")),
                    }
                }
            };
            if method == "selector" {
                return referenced(&value, defs, seen, set);
            }
            let mut atom = match method.as_str() {
                "fqn" => value,
                m => format!("{m}:{value}"),
            };
            let flag = |k: &str| o.get(k).and_then(Json::as_bool).unwrap_or(false);
            let depth = |k: &str| o.get(k).and_then(Json::as_u64);
            if flag("childrens_parents") {
                atom = format!("@{atom}");
            } else {
                if flag("parents") || depth("parents_depth").is_some() {
                    let n = depth("parents_depth")
                        .map(|n| n.to_string())
                        .unwrap_or_default();
                    atom = format!("{n}+{atom}");
                }
                if flag("children") || depth("children_depth").is_some() {
                    let n = depth("children_depth")
                        .map(|n| n.to_string())
                        .unwrap_or_default();
                    atom = format!("{atom}+{n}");
                }
            }
            Ok(vec![vec![atom]])
        }
        other => Err(format!("cannot read the definition {other}")),
    }
}

const OPERATORS: &[&str] = &[
    "parents",
    "children",
    "parents_depth",
    "children_depth",
    "childrens_parents",
    "indirect_selection",
    "description",
];

fn scalar(v: &Json) -> Result<String, String> {
    match v {
        Json::String(s) => Ok(s.clone()),
        Json::Number(n) => Ok(n.to_string()),
        Json::Bool(b) => Ok(b.to_string()),
        other => Err(format!("`value` must be text, got {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_become_selection_expressions() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("selectors.yml"),
            "selectors:\n  - name: nightly\n    default: true\n    definition:\n      union:\n        - method: tag\n          value: nightly\n          children: true\n        - intersection:\n            - 'path:models/marts'\n            - union: ['config.materialized:table', {method: fqn, value: orders, parents: true, parents_depth: 2}]\n        - exclude:\n            - tag: slow\n  - name: again\n    definition:\n      method: selector\n      value: nightly\n  - name: at\n    definition: {method: fqn, value: orders, childrens_parents: true}\n",
        )
        .expect("write");
        let s = load(dir.path()).expect("load");
        assert_eq!(
            s["nightly"],
            Selector {
                select: vec![
                    "tag:nightly+".into(),
                    "path:models/marts,config.materialized:table".into(),
                    "path:models/marts,2+orders".into()
                ],
                exclude: vec!["tag:slow".into()],
                default: true,
            }
        );
        assert_eq!(s["again"].select, s["nightly"].select);
        assert_eq!(s["at"].select, ["@orders"]);
        std::fs::write(
            dir.path().join("selectors.yml"),
            "selectors:\n  - name: a\n    definition: {method: selector, value: a}\n",
        )
        .expect("write");
        let e = load(dir.path()).expect_err("cycle").to_string();
        assert!(
            e.contains("selector `a`") && e.contains("refers to itself"),
            "{e}"
        );
    }
}
