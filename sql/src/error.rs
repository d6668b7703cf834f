//! [`SqlError`]: every failure names the file (and line and column when known).

use std::path::PathBuf;

/// Errors of SQL project loading, parsing and compilation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A YAML file is invalid.
    #[error("{path}:{line}:{column}: {message}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The project is inconsistent (missing dbt_project.yml, two models with one name, ...).
    #[error("{path}: {message}")]
    Project {
        /// Where.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Jinja failed: syntax, an undefined name, `exceptions.raise_compiler_error`, a bad call.
    #[error("{file}:{line}:{column}: {message}")]
    Jinja {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What failed.
        message: String,
    },
    /// `ref()` names a model, seed or snapshot that does not exist.
    #[error("{file}: model `{model}` refers to unknown `{reference}`{suggestion}")]
    UnknownRef {
        /// The model's file.
        file: String,
        /// The model.
        model: String,
        /// The missing name.
        reference: String,
        /// "did you mean" hint (may be empty).
        suggestion: String,
    },
    /// `source()` names a source table no schema file declares.
    #[error("{file}: model `{model}` uses unknown source `{source_name}.{table}`{suggestion}")]
    UnknownSource {
        /// The model's file.
        file: String,
        /// The model.
        model: String,
        /// Source name.
        source_name: String,
        /// Table name.
        table: String,
        /// "did you mean" hint (may be empty).
        suggestion: String,
    },
    /// Models refer to each other in a cycle.
    #[error("ref cycle: {0}")]
    Cycle(String),
}

/// " (did you mean `x`?)" for the candidates closest to `wanted`, or "".
pub fn did_you_mean<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let mut scored: Vec<(f64, &str)> = candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(wanted, c), c))
        .filter(|(s, _)| *s >= 0.8)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let best = scored.first().map(|(s, _)| *s).unwrap_or(0.0);
    let names: Vec<String> = scored
        .iter()
        .take_while(|(s, _)| *s >= best - 0.05)
        .take(3)
        .map(|(_, c)| format!("`{c}`"))
        .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", names.join(" or "))
    }
}
