//! [`BigQueryTarget`]: a `profiles.yml` output of `type: bigquery`, read as dbt-bigquery reads
//! it (<https://docs.getdbt.com/docs/core/connect-data-platform/bigquery-setup>): `project`
//! (or `database`), `dataset` (or `schema`), `location`, `method` with its `keyfile` /
//! `keyfile_json`, `priority`, `maximum_bytes_billed`, `job_execution_timeout_seconds`. Rainbow
//! adds `api_endpoint` (or the `BIGQUERY_EMULATOR_HOST` environment variable, as Google's
//! client libraries read it) for an emulator: the method and its key are still checked, but no
//! credentials are sent there.

use std::path::PathBuf;

use serde_json::Value as Json;

use crate::error::{BigQueryError, Result};

/// How the client authenticates (dbt-bigquery's `method`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `method: oauth`: Google's application default credentials
    /// (`GOOGLE_APPLICATION_CREDENTIALS`, `gcloud auth application-default login`'s file, or
    /// the metadata server).
    ApplicationDefault,
    /// `method: service-account`: a service-account JSON key file (`keyfile:`).
    ServiceAccountFile(PathBuf),
    /// `method: service-account-json`: the key inline (`keyfile_json:`, a mapping).
    ServiceAccountJson(String),
    /// An emulator (`api_endpoint` / `BIGQUERY_EMULATOR_HOST`): a fixed token.
    None,
}

/// A job's priority (dbt-bigquery's `priority`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// Runs as soon as possible (default).
    #[default]
    Interactive,
    /// Queued until idle slots are available.
    Batch,
}

impl Priority {
    /// BigQuery's name (`INTERACTIVE`, `BATCH`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "INTERACTIVE",
            Priority::Batch => "BATCH",
        }
    }
}

/// Where and how a project's models run on BigQuery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigQueryTarget {
    /// The GCP project holding the datasets (`project` / `database`).
    pub project: String,
    /// The default dataset (`dataset` / `schema`): dbt's target schema.
    pub dataset: String,
    /// Where datasets are created and jobs run (`US`, `EU`, `asia-southeast1`…); BigQuery's
    /// default (US) when absent.
    pub location: Option<String>,
    /// Credentials.
    pub auth: Auth,
    /// A job scanning more is refused by BigQuery before it runs (bytes).
    pub maximum_bytes_billed: Option<u64>,
    /// A job running longer is cancelled (seconds).
    pub job_execution_timeout_seconds: Option<u64>,
    /// Interactive or batch.
    pub priority: Priority,
    /// The API root (`http://127.0.0.1:9050` for an emulator); Google's when absent.
    pub api_endpoint: Option<String>,
}

impl BigQueryTarget {
    /// A target on an emulator at `endpoint` (no credentials).
    pub fn emulator(
        endpoint: impl Into<String>,
        project: impl Into<String>,
        dataset: impl Into<String>,
    ) -> Self {
        BigQueryTarget {
            project: project.into(),
            dataset: dataset.into(),
            location: None,
            auth: Auth::None,
            maximum_bytes_billed: None,
            job_execution_timeout_seconds: None,
            priority: Priority::Interactive,
            api_endpoint: Some(endpoint.into()),
        }
    }

    /// Reads a `type: bigquery` output of `profiles.yml` (as JSON); `location` names it in
    /// errors (`profiles.yml: target dev`). Relative keyfiles are relative to `base`. Errors:
    /// a missing `project`/`dataset`, an unknown `method` or `priority`, a method without its
    /// key, a non-numeric limit.
    pub fn from_profile(
        output: &Json,
        location: &str,
        base: &std::path::Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let bad = |message: String| BigQueryError::Config {
            location: location.to_owned(),
            message,
        };
        let text = |k: &str| output.get(k).and_then(Json::as_str).map(str::to_owned);
        let project = text("project")
            .or_else(|| text("database"))
            .ok_or_else(|| bad("a BigQuery target needs `project:` (the GCP project id)".into()))?;
        let dataset = text("dataset")
            .or_else(|| text("schema"))
            .ok_or_else(|| bad("a BigQuery target needs `dataset:` (or `schema:`)".into()))?;
        let number = |k: &str| -> Result<Option<u64>> {
            match output.get(k) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::Number(n)) => n
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| bad(format!("`{k}` must be a whole number ≥ 0, not {n}"))),
                Some(Json::String(s)) => s
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| bad(format!("`{k}` must be a whole number ≥ 0, not `{s}`"))),
                Some(other) => Err(bad(format!("`{k}` must be a whole number, not {other}"))),
            }
        };
        let priority = match text("priority").as_deref() {
            None | Some("interactive") => Priority::Interactive,
            Some("batch") => Priority::Batch,
            Some(other) => {
                return Err(bad(format!(
                    "`priority: {other}`: expected `interactive` or `batch`"
                )));
            }
        };
        let api_endpoint = text("api_endpoint").or_else(|| {
            env("BIGQUERY_EMULATOR_HOST").map(|h| {
                if h.starts_with("http://") || h.starts_with("https://") {
                    h
                } else {
                    format!("http://{h}")
                }
            })
        });
        let method = text("method").unwrap_or_else(|| "oauth".into());
        let auth = match method.as_str() {
            "oauth" => Auth::ApplicationDefault,
            "service-account" => {
                let file = text("keyfile").ok_or_else(|| {
                    bad("`method: service-account` needs `keyfile:` (a service-account JSON key file)".into())
                })?;
                let file = PathBuf::from(shellexpand_home(&file, &env));
                let file = if file.is_relative() {
                    base.join(file)
                } else {
                    file
                };
                if !file.is_file() {
                    return Err(bad(format!("keyfile {} does not exist", file.display())));
                }
                Auth::ServiceAccountFile(file)
            }
            "service-account-json" => match output.get("keyfile_json") {
                Some(key @ Json::Object(_)) => Auth::ServiceAccountJson(key.to_string()),
                Some(Json::String(s)) => Auth::ServiceAccountJson(s.clone()),
                _ => {
                    return Err(bad(
                        "`method: service-account-json` needs `keyfile_json:` (the key's fields)"
                            .into(),
                    ));
                }
            },
            other => {
                return Err(bad(format!(
                    "`method: {other}`: expected `oauth`, `service-account` or `service-account-json`"
                )));
            }
        };
        // An emulator takes no credentials (the method is still checked above).
        let auth = if api_endpoint.is_some() {
            Auth::None
        } else {
            auth
        };
        Ok(BigQueryTarget {
            project,
            dataset,
            location: text("location"),
            auth,
            maximum_bytes_billed: number("maximum_bytes_billed")?,
            job_execution_timeout_seconds: number("job_execution_timeout_seconds")?
                .or(number("timeout_seconds")?),
            priority,
            api_endpoint,
        })
    }
}

/// `~/key.json` with the home directory.
fn shellexpand_home(path: &str, env: &impl Fn(&str) -> Option<String>) -> String {
    match (path.strip_prefix("~/"), env("HOME")) {
        (Some(rest), Some(home)) => format!("{home}/{rest}"),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn read(output: Json) -> Result<BigQueryTarget> {
        BigQueryTarget::from_profile(&output, "profiles.yml: target prod", Path::new("/p"), |k| {
            (k == "HOME").then(|| "/home/u".to_owned())
        })
    }

    #[test]
    fn reads_dbt_bigquery_outputs() {
        let home = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(home.path().join("keys")).expect("mkdir");
        std::fs::write(home.path().join("keys/sa.json"), "{}").expect("key");
        std::fs::write(home.path().join("k.json"), "{}").expect("key");
        let read = |output: Json| {
            BigQueryTarget::from_profile(&output, "profiles.yml: target prod", home.path(), |k| {
                (k == "HOME").then(|| home.path().display().to_string())
            })
        };
        let t = read(
            json!({"type": "bigquery", "method": "service-account", "project": "acme",
            "dataset": "analytics", "keyfile": "~/keys/sa.json", "location": "EU",
            "maximum_bytes_billed": 1000000000, "job_execution_timeout_seconds": "300",
            "priority": "batch"}),
        )
        .expect("ok");
        assert_eq!(t.project, "acme");
        assert_eq!(t.dataset, "analytics");
        assert_eq!(t.location.as_deref(), Some("EU"));
        assert_eq!(
            t.auth,
            Auth::ServiceAccountFile(home.path().join("keys/sa.json"))
        );
        assert_eq!(t.maximum_bytes_billed, Some(1_000_000_000));
        assert_eq!(t.job_execution_timeout_seconds, Some(300));
        assert_eq!(t.priority, Priority::Batch);
        let t = read(
            json!({"database": "acme", "schema": "s", "keyfile": "k.json",
            "method": "service-account"}),
        )
        .expect("ok");
        assert_eq!(t.auth, Auth::ServiceAccountFile(home.path().join("k.json")));
        assert_eq!(
            read(json!({"project": "a", "dataset": "d"}))
                .expect("ok")
                .auth,
            Auth::ApplicationDefault
        );
    }

    #[test]
    fn an_emulator_endpoint_sends_no_credentials() {
        let t = BigQueryTarget::from_profile(
            &json!({"project": "p", "dataset": "d", "method": "oauth"}),
            "x",
            Path::new("/"),
            |k| (k == "BIGQUERY_EMULATOR_HOST").then(|| "127.0.0.1:9050".to_owned()),
        )
        .expect("ok");
        assert_eq!(t.auth, Auth::None);
        assert_eq!(t.api_endpoint.as_deref(), Some("http://127.0.0.1:9050"));
        // The method is checked all the same.
        let e = BigQueryTarget::from_profile(
            &json!({"project": "p", "dataset": "d", "method": "magic", "api_endpoint": "http://e"}),
            "x",
            Path::new("/"),
            |_| None,
        )
        .expect_err("an unknown method");
        assert!(e.to_string().contains("`method: magic`"), "{e}");
    }

    #[test]
    fn bad_outputs_name_the_setting() {
        let message = |o: Json| read(o).expect_err("an error").to_string();
        assert!(message(json!({"dataset": "d"})).contains("needs `project:`"));
        assert!(message(json!({"project": "p"})).contains("needs `dataset:`"));
        assert!(
            message(json!({"project": "p", "dataset": "d", "method": "password"}))
                .contains("`method: password`")
        );
        assert!(
            message(json!({"project": "p", "dataset": "d", "method": "service-account"}))
                .contains("needs `keyfile:`")
        );
        let m = message(json!({"project": "p", "dataset": "d", "maximum_bytes_billed": "1GB"}));
        assert!(
            m.starts_with("profiles.yml: target prod: `maximum_bytes_billed`"),
            "{m}"
        );
        assert!(
            message(json!({"project": "p", "dataset": "d", "priority": "urgent"}))
                .contains("`priority: urgent`")
        );
    }
}
