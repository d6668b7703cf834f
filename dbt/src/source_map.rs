//! Where a line of a node's compiled SQL comes from in its file.
//!
//! A warehouse reports an error's position in the SQL it ran — the node's compiled SQL, after
//! Jinja. Users edit the file. The file and its compiled SQL are aligned line by line (a Myers
//! diff, the `similar` crate): a line Jinja left unchanged maps to its line in the file, with
//! the same column; a line Jinja produced (a macro call, a loop, `ref()`) maps to the lines of
//! the file that rendered it.

use similar::{Algorithm, DiffOp, capture_diff_slices};

use crate::compile::Node;
use crate::project::Project;

/// A node's file (its path and text) and its compiled SQL.
/// The file is read only when an error is placed ([`NodeSource::locate`]), not per build.
pub(crate) struct NodeSource {
    path: String,
    file: std::path::PathBuf,
    compiled: String,
    inlined: usize,
}

impl NodeSource {
    /// `node`'s file under `project` and its compiled SQL; `None` without compiled SQL
    /// (errors then give lines of the compiled SQL).
    pub(crate) fn of(project: &Project, node: &Node) -> Option<NodeSource> {
        Some(NodeSource {
            path: node.path.clone(),
            file: project.root.join(&node.path),
            compiled: node.compiled.clone()?,
            inlined: node.inlined_lines,
        })
    }

    /// Whether `sql`, after its first `header` lines, is this node's compiled SQL verbatim (so
    /// a position in `sql` is one in the compiled SQL, `header` lines down).
    pub(crate) fn holds_compiled_at(&self, sql: &str, header: usize) -> bool {
        let compiled = self.compiled.split('\n');
        sql.split('\n')
            .skip(header)
            .take(compiled.clone().count())
            .eq(compiled)
    }

    /// The compiled SQL's end: its last line that is not blank, and the column after its last
    /// character (where a parser that ran out of input, `found: EOF`, stopped).
    pub(crate) fn end(&self) -> Option<(u32, u32)> {
        let (index, line) = self
            .compiled
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .last()?;
        let line_number = u32::try_from(index + 1).ok()?;
        let column = u32::try_from(line.trim_end().chars().count() + 1).ok()?;
        Some((line_number, column))
    }

    /// Where line `line`, column `column` of the compiled SQL is in the file (read now), as
    /// an error's context ([`Origin::describe`]); `None` past the compiled SQL's end or when
    /// the file cannot be read.
    pub(crate) fn locate(&self, line: u32, column: u32) -> Option<String> {
        let text = std::fs::read_to_string(&self.file).ok()?;
        origin(&text, &self.compiled, self.inlined, line)
            .map(|o| o.describe(&self.path, line, column))
    }
}

/// The share (0–1) of a file line's literal text a rewritten compiled line must hold, word by
/// word, to be said to come from that line alone.
const SAME_LINE_COVERAGE: f64 = 0.6;

/// The share of `source`'s literal text (Jinja tags removed) that `compiled` holds in order,
/// by words; `None` when the line is all Jinja.
fn coverage(source: &str, compiled: &str) -> Option<f64> {
    static TAG: std::sync::LazyLock<Option<regex::Regex>> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}").ok());
    let literal = match TAG.as_ref() {
        Some(tag) => tag.replace_all(source, "").into_owned(),
        None => source.to_owned(),
    };
    let words: Vec<&str> = literal.split_whitespace().collect();
    if words.is_empty() {
        return None;
    }
    let held: Vec<&str> = compiled.split_whitespace().collect();
    let matched: usize = capture_diff_slices(Algorithm::Myers, &words, &held)
        .iter()
        .filter_map(|op| match op {
            DiffOp::Equal { len, .. } => Some(*len),
            _ => None,
        })
        .sum();
    Some(matched as f64 / words.len() as f64)
}

/// Where a compiled line comes from in the file (1-based lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The file's line, unchanged by Jinja (columns are the same too).
    Line(u32),
    /// Jinja rendered it from these lines of the file (first ≤ last).
    Rendered {
        /// First line of the file involved.
        first: u32,
        /// Last line of the file involved.
        last: u32,
    },
    /// The SQL of an ephemeral model that `ref()` inlined as a `__dbt__cte__<name>` CTE at the
    /// top of the compiled SQL: the error is in that model's file.
    Ephemeral(String),
}

impl Origin {
    /// ` line 7 column 3` / ` lines 5-8` as an error's location in the file, with where it is
    /// in the compiled SQL: `models/x.sql line 7 column 3 (compiled SQL line 9)`.
    pub(crate) fn describe(&self, path: &str, compiled_line: u32, column: u32) -> String {
        match self {
            Origin::Line(line) => {
                format!("{path} line {line} column {column} (compiled SQL line {compiled_line})")
            }
            Origin::Rendered { first, last } if first == last => format!(
                "{path} line {first}, as rendered by Jinja (compiled SQL line {compiled_line} column {column})"
            ),
            Origin::Rendered { first, last } => format!(
                "{path} lines {first}-{last}, as rendered by Jinja (compiled SQL line {compiled_line} column {column})"
            ),
            Origin::Ephemeral(model) => format!(
                "{path} (compiled SQL line {compiled_line} column {column}, in the SQL of the ephemeral model `{model}` that ref() inlined)"
            ),
        }
    }
}

/// The last `at Line: L, Column: C` in a SQL parser's message (sqlparser's position format),
/// 1-based.
pub(crate) fn parser_position(message: &str) -> Option<(u32, u32)> {
    let at = message.rfind("at Line: ")?;
    let rest = &message[at + "at Line: ".len()..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?))
}

/// The ephemeral model a compiled line opens the CTE of (`[with ]__dbt__cte__<name> as (`).
fn ephemeral_cte(line: &str) -> Option<&str> {
    let line = line.trim_start();
    let line = line
        .strip_prefix("with ")
        .map(str::trim_start)
        .unwrap_or(line);
    let rest = line.strip_prefix("__dbt__cte__")?;
    let name = rest.split_whitespace().next()?;
    rest[name.len()..]
        .trim_start()
        .starts_with("as (")
        .then_some(name)
}

/// The origin in `source` (the file's text) of line `line` (1-based) of `compiled` (what
/// Jinja rendered from it, its first `inlined` lines ephemeral models' CTEs); `None` when
/// `compiled` has no such line. Trailing whitespace is
/// ignored (Jinja's whitespace control strips it).
pub(crate) fn origin(source: &str, compiled: &str, inlined: usize, line: u32) -> Option<Origin> {
    let source: Vec<&str> = source.lines().map(str::trim_end).collect();
    let compiled: Vec<&str> = compiled.lines().map(str::trim_end).collect();
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    if index >= compiled.len() {
        return None;
    }
    // The CTEs of inlined ephemeral models: the one opened nearest above (they are flat).
    if index < inlined {
        let model = compiled[..=index]
            .iter()
            .rev()
            .find_map(|l| ephemeral_cte(l))?;
        return Some(Origin::Ephemeral(model.to_owned()));
    }
    let one_based = |i: usize| u32::try_from(i + 1).unwrap_or(u32::MAX);
    let last_source = source.len().max(1);
    for op in capture_diff_slices(Algorithm::Myers, &source, &compiled) {
        let (old, new) = (op.old_range(), op.new_range());
        if !new.contains(&index) {
            continue;
        }
        return Some(match op {
            DiffOp::Equal { .. } => Origin::Line(one_based(old.start + (index - new.start))),
            // Lines Jinja added between two unchanged lines: the file's lines around them.
            DiffOp::Insert { old_index, .. } => Origin::Rendered {
                first: one_based(old_index.saturating_sub(1)),
                last: one_based(old_index.min(last_source - 1)),
            },
            // Lines Jinja rewrote: the line of the rewritten block whose literal text (its
            // SQL outside `{{ }}`, `{% %}`, `{# #}`) the compiled line holds, when one clearly
            // does (a loop body, a line with an expression); else the whole block.
            _ => {
                let line = compiled[index];
                let best = old
                    .clone()
                    .filter_map(|i| Some((i, coverage(source[i], line)?)))
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                match best {
                    Some((i, covered)) if covered >= SAME_LINE_COVERAGE => Origin::Rendered {
                        first: one_based(i),
                        last: one_based(i),
                    },
                    _ => Origin::Rendered {
                        first: one_based(old.start),
                        last: one_based(old.end.saturating_sub(1).max(old.start)),
                    },
                }
            }
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "{{ config(materialized='table') }}\n\nselect\n    order_id,\n    {{ cents_to_dollars('amount') }} as amount,\n    {% for m in ['card', 'cash'] %}\n    sum(case when method = '{{ m }}' then 1 end) as {{ m }}_count,\n    {% endfor %}\n    bad_column\nfrom {{ ref('orders') }}\n";

    const COMPILED: &str = "\n\nselect\n    order_id,\n    (amount / 100)::numeric(16, 2) as amount,\n    \n    sum(case when method = 'card' then 1 end) as card_count,\n    \n    sum(case when method = 'cash' then 1 end) as cash_count,\n    \n    bad_column\nfrom `p`.`main`.`orders`\n";

    #[test]
    fn unchanged_lines_keep_their_number_and_rendered_lines_name_their_source() {
        // `bad_column` is line 11 of the compiled SQL and line 9 of the file.
        assert_eq!(origin(SOURCE, COMPILED, 0, 11), Some(Origin::Line(9)));
        assert_eq!(origin(SOURCE, COMPILED, 0, 4), Some(Origin::Line(4)));
        // The macro call's line.
        assert_eq!(
            origin(SOURCE, COMPILED, 0, 5),
            Some(Origin::Rendered { first: 5, last: 5 })
        );
        // Each of a loop's outputs maps to the loop's body.
        for line in [7, 9] {
            assert_eq!(
                origin(SOURCE, COMPILED, 0, line),
                Some(Origin::Rendered { first: 7, last: 7 })
            );
        }
        // A blank line the loop left is only known to come from the block.
        assert_eq!(
            origin(SOURCE, COMPILED, 0, 8),
            Some(Origin::Rendered { first: 5, last: 8 })
        );
        // `ref()`'s line.
        assert_eq!(
            origin(SOURCE, COMPILED, 0, 12),
            Some(Origin::Rendered {
                first: 10,
                last: 10
            })
        );
        assert_eq!(origin(SOURCE, COMPILED, 0, 99), None);
        assert_eq!(origin(SOURCE, COMPILED, 0, 0), None);
    }

    #[test]
    fn lines_of_an_inlined_ephemeral_model_name_it() {
        let source = "{{ config(materialized='table') }}\nselect id from {{ ref('bad') }}\n";
        let compiled =
            "with __dbt__cte__bad as (\nselect\n  nope( as id\n)\nselect id from __dbt__cte__bad";
        assert_eq!(
            origin(source, compiled, 4, 3),
            Some(Origin::Ephemeral("bad".into()))
        );
        // The model's own line still maps to its file.
        assert_eq!(
            origin(source, compiled, 4, 5),
            Some(Origin::Rendered { first: 2, last: 2 })
        );
        assert_eq!(
            Origin::Ephemeral("bad".into()).describe("models/down.sql", 3, 9),
            "models/down.sql (compiled SQL line 3 column 9, in the SQL of the ephemeral model `bad` that ref() inlined)"
        );
        assert_eq!(ephemeral_cte("__dbt__cte__a_b as ("), Some("a_b"));
        assert_eq!(ephemeral_cte("select 1"), None);
    }

    #[test]
    fn parser_positions_are_read_from_sqlparser_messages() {
        assert_eq!(
            parser_position(
                "sql parser error: Expected: an expression, found: * at Line: 2, Column: 6"
            ),
            Some((2, 6))
        );
        assert_eq!(parser_position("Schema error: No field named x."), None);
        assert_eq!(parser_position("at Line: two, Column: 6"), None);
    }

    #[test]
    fn descriptions_name_the_file_line_and_the_compiled_line() {
        assert_eq!(
            Origin::Line(9).describe("models/m.sql", 11, 5),
            "models/m.sql line 9 column 5 (compiled SQL line 11)"
        );
        assert_eq!(
            Origin::Rendered { first: 6, last: 8 }.describe("models/m.sql", 9, 3),
            "models/m.sql lines 6-8, as rendered by Jinja (compiled SQL line 9 column 3)"
        );
    }
}
