//! [`BigQuery`]: the client Rainbow runs a target's work through (gcp-bigquery-client's REST
//! API): query jobs with Rainbow's own job ids, labels, dry runs, byte limits and priority,
//! waited for and read back with their statistics; datasets created when missing; relations
//! looked up. Every job is created with `jobs.insert` under an id made here, so an error always
//! names a job that can be found in the console (`bq show -j <id>`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use gcp_bigquery_client::Client;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::job::Job;
use gcp_bigquery_client::model::job_configuration::JobConfiguration;
use gcp_bigquery_client::model::job_configuration_load::JobConfigurationLoad;
use gcp_bigquery_client::model::job_configuration_query::JobConfigurationQuery;
use gcp_bigquery_client::model::job_reference::JobReference;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_reference::TableReference;
use serde_json::Value as Json;

use crate::error::{BigQueryError, Result};
use crate::rows::{Column, column_of, row_values};
use crate::target::{Auth, BigQueryTarget};

/// How long one API request may take (a job's own run time is waited for by polling).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How long connecting to the API may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Retries of a transient failure: 4, after 0.5 s, 1 s, 2 s, 4 s.
fn retries() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_times(4)
}

/// A failure worth retrying: no answer (network), or BigQuery's 429/5xx.
fn transient(e: &BQError) -> bool {
    match e {
        BQError::RequestError(_) => true,
        BQError::ResponseError { error } => {
            matches!(error.error.code, 429 | 500 | 502 | 503 | 504)
        }
        _ => false,
    }
}

/// A relation's kind as BigQuery reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    /// A table (`TABLE`, also a snapshot or clone).
    Table,
    /// A logical view (`VIEW`) or materialized view.
    View,
    /// An external table (`EXTERNAL`).
    External,
}

/// A relation: its kind, columns and layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Table, view or external.
    pub kind: RelationKind,
    /// Columns in order.
    pub columns: Vec<Column>,
    /// Its partitioning: `field:DAY` (time: `HOUR`, `DAY`, `MONTH`, `YEAR`; `_PARTITIONTIME`
    /// when by ingestion time) or `field:range:start:end:interval`; `None` when unpartitioned.
    pub partitioning: Option<String>,
    /// Its clustering columns, in order (empty: none).
    pub clustering: Vec<String>,
}

/// What a job is for, and how it runs.
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    /// Names the job in errors (`models/marts/fact_sales.sql`).
    pub context: String,
    /// Labels on the job (`dbt_model`, `rainbow_run_id`…): made lowercase, other characters
    /// than letters, digits, `_` and `-` replaced by `_`, cut at 63 characters (BigQuery's rules).
    pub labels: BTreeMap<String, String>,
    /// Estimate only: BigQuery plans the query and reports the bytes it would scan.
    pub dry_run: bool,
    /// Read the result rows (a `SELECT`); DDL and DML jobs have none.
    pub read_rows: bool,
    /// The dataset unqualified table names resolve in (in the target's project).
    pub default_dataset: Option<String>,
}

/// A finished job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobResult {
    /// The job's id.
    pub job_id: String,
    /// BigQuery's statement type (`SELECT`, `CREATE_TABLE_AS_SELECT`, `MERGE`…).
    pub statement_type: Option<String>,
    /// The result's columns (empty for DDL; a dry run's too, from its statistics).
    pub columns: Vec<Column>,
    /// The result's rows as JSON, by column (see [`crate::rows`] for the encoding).
    pub rows: Vec<Vec<Json>>,
    /// Bytes the query read (for a dry run: would read).
    pub bytes_processed: u64,
    /// Bytes billed (0 for a dry run).
    pub bytes_billed: u64,
    /// Slot time used (milliseconds).
    pub slot_ms: u64,
    /// Rows inserted, updated or deleted by DML.
    pub dml_rows: Option<u64>,
}

/// A BigQuery target's client (cheap to clone).
#[derive(Clone)]
pub struct BigQuery {
    client: Arc<Client>,
    target: Arc<BigQueryTarget>,
    /// Datasets this client found or created: asked once, not before every node.
    datasets: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl std::fmt::Debug for BigQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BigQuery")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The token sent to an emulator.
#[derive(Clone)]
struct NoCredentials;

#[async_trait::async_trait]
impl gcp_bigquery_client::auth::Authenticator for NoCredentials {
    async fn access_token(&self) -> std::result::Result<String, BQError> {
        Ok("emulator".to_owned())
    }
}

impl BigQuery {
    /// A client for `target`, authenticated per its method. Errors: an unreadable or invalid
    /// key file, no application default credentials.
    pub async fn connect(target: BigQueryTarget) -> Result<Self> {
        let mut builder = gcp_bigquery_client::client_builder::ClientBuilder::new();
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| BigQueryError::Config {
                location: "the HTTP client".into(),
                message: e.to_string(),
            })?;
        builder.with_client(http);
        if let Some(endpoint) = &target.api_endpoint {
            builder.with_v2_base_url(format!("{}/bigquery/v2", endpoint.trim_end_matches('/')));
        }
        let auth_error = |what: String| {
            move |e: BQError| BigQueryError::Config {
                location: what,
                message: e.to_string(),
            }
        };
        let client = match &target.auth {
            Auth::None => builder
                .build_from_authenticator(Arc::new(NoCredentials))
                .await
                .map_err(auth_error("the emulator client".into()))?,
            Auth::ApplicationDefault => builder
                .build_from_application_default_credentials()
                .await
                .map_err(auth_error(
                    "`method: oauth` (application default credentials: GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default login`)".into(),
                ))?,
            Auth::ServiceAccountFile(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| BigQueryError::Config {
                    location: format!("keyfile {}", path.display()),
                    message: e.to_string(),
                })?;
                let key = parse_key(&text, &format!("keyfile {}", path.display()))?;
                builder
                    .build_from_service_account_key(key, false)
                    .await
                    .map_err(auth_error(format!("keyfile {}", path.display())))?
            }
            Auth::ServiceAccountJson(text) => {
                let key = parse_key(text, "keyfile_json")?;
                builder
                    .build_from_service_account_key(key, false)
                    .await
                    .map_err(auth_error("keyfile_json".into()))?
            }
        };
        Ok(BigQuery {
            client: Arc::new(client),
            target: Arc::new(target),
            datasets: Arc::default(),
        })
    }

    /// The target.
    pub fn target(&self) -> &BigQueryTarget {
        &self.target
    }

    /// A relation's quoted name: `` `project.dataset.table` ``.
    pub fn quoted(&self, dataset: &str, table: &str) -> String {
        format!("`{}.{dataset}.{table}`", self.target.project)
    }

    /// Creates `dataset` in the target's project and location unless it exists (asked of
    /// BigQuery once per client). Errors: no permission, an unreachable endpoint.
    pub async fn ensure_dataset(&self, dataset: &str) -> Result<()> {
        let known = |datasets: &Self| {
            datasets
                .datasets
                .lock()
                .map(|d| d.contains(dataset))
                .unwrap_or(false)
        };
        if known(self) {
            return Ok(());
        }
        self.create_dataset(dataset).await?;
        if let Ok(mut d) = self.datasets.lock() {
            d.insert(dataset.to_owned());
        }
        Ok(())
    }

    async fn create_dataset(&self, dataset: &str) -> Result<()> {
        let project = &self.target.project;
        let context = format!("dataset {project}.{dataset}");
        let got = (|| self.client.dataset().get(project, dataset))
            .retry(retries())
            .when(transient)
            .await;
        match got {
            Ok(_) => return Ok(()),
            Err(e) => {
                let e = BigQueryError::api(&format!("get {context}"))(e);
                if !e.is_not_found() {
                    return Err(e);
                }
            }
        }
        let mut new = Dataset::new(project, dataset);
        if let Some(location) = &self.target.location {
            new = new.location(location);
        }
        match self.client.dataset().create(new).await {
            Ok(_) => Ok(()),
            // Created by another step meanwhile.
            Err(BQError::ResponseError { error }) if error.error.code == 409 => Ok(()),
            Err(e) => Err(BigQueryError::api(&format!("create {context}"))(e)),
        }
    }

    /// The relation `dataset.table`, `None` when it (or its dataset) does not exist.
    pub async fn relation(&self, dataset: &str, table: &str) -> Result<Option<Relation>> {
        let project = &self.target.project;
        let got = (|| self.client.table().get(project, dataset, table, None))
            .retry(retries())
            .when(transient)
            .await;
        let table = match got {
            Ok(t) => t,
            Err(e) => {
                let e = BigQueryError::api(&format!("get table {project}.{dataset}.{table}"))(e);
                return if e.is_not_found() { Ok(None) } else { Err(e) };
            }
        };
        let kind = match table.r#type.as_deref() {
            Some("VIEW" | "MATERIALIZED_VIEW") => RelationKind::View,
            Some("EXTERNAL") => RelationKind::External,
            _ => RelationKind::Table,
        };
        let columns = table
            .schema
            .fields
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(column_of)
            .collect();
        let partitioning = match (&table.time_partitioning, &table.range_partitioning) {
            (Some(t), _) => Some(format!(
                "{}:{}",
                t.field.as_deref().unwrap_or("_PARTITIONTIME"),
                t.r#type.to_uppercase()
            )),
            (None, Some(r)) => Some(match &r.range {
                Some(range) => format!(
                    "{}:range:{}:{}:{}",
                    r.field.as_deref().unwrap_or_default(),
                    range.start,
                    range.end,
                    range.interval
                ),
                None => format!("{}:range", r.field.as_deref().unwrap_or_default()),
            }),
            (None, None) => None,
        };
        let clustering = table
            .clustering
            .as_ref()
            .and_then(|c| c.fields.clone())
            .unwrap_or_default();
        Ok(Some(Relation {
            kind,
            columns,
            partitioning,
            clustering,
        }))
    }

    /// Runs `sql` (GoogleSQL) as a query job and waits for it. Errors: BigQuery rejects or
    /// fails the job ([`BigQueryError::Job`] with the job id, reason and position), the job
    /// outlasts `job_execution_timeout_seconds`, the API is unreachable.
    pub async fn run(&self, sql: &str, options: &JobOptions) -> Result<JobResult> {
        let target = &self.target;
        let configuration = JobConfiguration {
            query: Some(JobConfigurationQuery {
                query: sql.to_owned(),
                use_legacy_sql: Some(false),
                maximum_bytes_billed: target.maximum_bytes_billed.map(|b| b.to_string()),
                priority: Some(target.priority.as_str().to_owned()),
                default_dataset: options.default_dataset.as_ref().map(|d| {
                    gcp_bigquery_client::model::dataset_reference::DatasetReference {
                        dataset_id: d.clone(),
                        project_id: target.project.clone(),
                    }
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.insert_and_wait(configuration, options).await
    }

    /// Loads the Parquet files at `uris` (`gs://bucket/path/file.parquet`; BigQuery reads them)
    /// into the existing table `dataset.table`, replacing its rows (`WRITE_TRUNCATE`): a load
    /// job, free of query charges. With `hive_prefix` (`gs://bucket/path`), the `key=value`
    /// folders after it become text columns. Errors: as [`BigQuery::run`]'s (a file BigQuery
    /// cannot read, columns that do not match the table).
    pub async fn load_parquet(
        &self,
        uris: Vec<String>,
        hive_prefix: Option<&str>,
        dataset: &str,
        table: &str,
        options: &JobOptions,
    ) -> Result<JobResult> {
        let configuration = JobConfiguration {
            load: Some(JobConfigurationLoad {
                source_uris: Some(uris),
                source_format: Some("PARQUET".into()),
                destination_table: Some(TableReference::new(&self.target.project, dataset, table)),
                write_disposition: Some("WRITE_TRUNCATE".into()),
                create_disposition: Some("CREATE_NEVER".into()),
                hive_partitioning_options: hive_prefix.map(|prefix| {
                    gcp_bigquery_client::model::hive_partitioning_options::HivePartitioningOptions {
                        mode: Some("STRINGS".into()),
                        require_partition_filter: None,
                        source_uri_prefix: Some(prefix.to_owned()),
                    }
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.insert_and_wait(configuration, options).await
    }

    /// The job `job_id` (retried on transient failures); `context` names it in errors.
    async fn get_job(&self, job_id: &str, context: &str) -> Result<Job> {
        let target = &self.target;
        (|| {
            self.client
                .job()
                .get_job(&target.project, job_id, target.location.as_deref())
        })
        .retry(retries())
        .when(transient)
        .await
        .map_err(BigQueryError::api(&format!("{context}: get job {job_id}")))
    }

    /// Inserts a job of `configuration` (with Rainbow's id, the options' labels and dry-run
    /// flag, the target's timeout) and waits for it; its rows when `options.read_rows`.
    async fn insert_and_wait(
        &self,
        mut configuration: JobConfiguration,
        options: &JobOptions,
    ) -> Result<JobResult> {
        let target = &self.target;
        let job_id = format!("rainbow_{}", uuid::Uuid::now_v7().simple());
        let labels = options
            .labels
            .iter()
            .map(|(k, v)| (label(k), label(v)))
            .filter(|(k, _)| !k.is_empty())
            .collect();
        configuration.dry_run = Some(options.dry_run);
        configuration.labels = Some(labels);
        configuration.job_timeout_ms = target
            .job_execution_timeout_seconds
            .map(|s| s.saturating_mul(1000).to_string());
        let job = Job {
            job_reference: Some(JobReference {
                job_id: Some(job_id.clone()),
                location: target.location.clone(),
                project_id: Some(target.project.clone()),
            }),
            configuration: Some(configuration),
            ..Default::default()
        };
        let job_error = |e: BQError| match e {
            BQError::ResponseError { error } if error.error.code == 400 => {
                let reason = error
                    .error
                    .errors
                    .first()
                    .and_then(|e| e.get("reason").cloned())
                    .unwrap_or_else(|| "invalid".into());
                failed(&options.context, &job_id, reason, error.error.message)
            }
            other => {
                BigQueryError::api(&format!("{}: insert job {job_id}", options.context))(other)
            }
        };
        // Inserted again after a transient failure under the same id: a 409 then means the
        // first attempt created it, and it is read back.
        let inserted = (|| self.client.job().insert(&target.project, job.clone()))
            .retry(retries())
            .when(transient)
            .await;
        let mut job = match inserted {
            Ok(job) => job,
            Err(BQError::ResponseError { error }) if error.error.code == 409 => {
                self.get_job(&job_id, &options.context).await?
            }
            Err(e) => return Err(job_error(e)),
        };
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        while job.status.as_ref().and_then(|s| s.state.as_deref()) != Some("DONE") {
            if let Some(seconds) = target.job_execution_timeout_seconds
                && started.elapsed() > Duration::from_secs(seconds)
            {
                return Err(BigQueryError::Timeout {
                    context: options.context.clone(),
                    job_id,
                    seconds,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
            job = self.get_job(&job_id, &options.context).await?;
        }
        if let Some(error) = job.status.as_ref().and_then(|s| s.error_result.as_ref()) {
            return Err(failed(
                &options.context,
                &job_id,
                error.reason.clone().unwrap_or_else(|| "error".into()),
                error.message.clone().unwrap_or_default(),
            ));
        }
        let stats = job.statistics.as_ref().and_then(|s| s.query.as_ref());
        let number = |v: Option<&String>| v.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let mut result = JobResult {
            job_id: job_id.clone(),
            statement_type: stats.and_then(|s| s.statement_type.clone()),
            bytes_processed: number(stats.and_then(|s| s.total_bytes_processed.as_ref())),
            bytes_billed: number(stats.and_then(|s| s.total_bytes_billed.as_ref())),
            slot_ms: number(stats.and_then(|s| s.total_slot_ms.as_ref())),
            dml_rows: stats
                .and_then(|s| s.num_dml_affected_rows.as_ref())
                .and_then(|s| s.parse().ok()),
            ..Default::default()
        };
        // A dry run's result columns (what the query would return).
        if let Some(fields) = stats
            .and_then(|s| s.schema.as_ref())
            .and_then(|s| s.fields.as_deref())
        {
            result.columns = fields.iter().map(column_of).collect();
        }
        if options.dry_run || !options.read_rows {
            return Ok(result);
        }
        let mut page_token = None;
        loop {
            // (`formatOptions.useInt64Timestamp` cannot be sent: the client's query string
            // encoder refuses nested parameters; both encodings are read.)
            let parameters = GetQueryResultsParameters {
                location: target.location.clone(),
                page_token: page_token.take(),
                ..Default::default()
            };
            let page = (|| {
                self.client
                    .job()
                    .get_query_results(&target.project, &job_id, parameters.clone())
            })
            .retry(retries())
            .when(transient)
            .await
            .map_err(BigQueryError::api(&format!(
                "{}: results of job {job_id}",
                options.context
            )))?;
            let fields: &[TableFieldSchema] = page
                .schema
                .as_ref()
                .and_then(|s| s.fields.as_deref())
                .unwrap_or_default();
            if result.columns.is_empty() {
                result.columns = fields.iter().map(column_of).collect();
            }
            for row in page.rows.as_deref().unwrap_or_default() {
                result.rows.push(row_values(fields, row));
            }
            match page.page_token {
                Some(token) if !page.rows.as_deref().unwrap_or_default().is_empty() => {
                    page_token = Some(token)
                }
                _ => break,
            }
        }
        Ok(result)
    }
}

/// A failed job's error, with BigQuery's position when its message gives one.
fn failed(context: &str, job_id: &str, reason: String, message: String) -> BigQueryError {
    let position = crate::error::position(&message);
    BigQueryError::Job {
        context: context.to_owned(),
        job_id: job_id.to_owned(),
        reason,
        message,
        position,
    }
}

/// A service-account key from its JSON text.
fn parse_key(text: &str, what: &str) -> Result<gcp_bigquery_client::yup_oauth2::ServiceAccountKey> {
    serde_json::from_str(text).map_err(|e| BigQueryError::Config {
        location: what.to_owned(),
        message: format!(
            "not a service-account key (JSON with `type`, `client_email`, `private_key`…): {e}"
        ),
    })
}

/// A label key or value as BigQuery accepts it.
fn label(text: &str) -> String {
    text.chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_bigquerys_rules() {
        assert_eq!(label("Fact_Sales"), "fact_sales");
        assert_eq!(label("marts/fact sales.sql"), "marts_fact_sales_sql");
        assert_eq!(label(&"x".repeat(80)).len(), 63);
    }

    #[test]
    fn a_key_that_is_not_a_service_account_key_is_named() {
        let e = parse_key("{\"hello\": 1}", "keyfile /k.json").expect_err("an error");
        assert!(
            e.to_string()
                .starts_with("keyfile /k.json: not a service-account key"),
            "{e}"
        );
    }
}
