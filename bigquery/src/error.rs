//! [`BigQueryError`], the crate's one error: every failure names what it was doing (the job, the
//! dataset, the keyfile) and carries BigQuery's own message.

/// Errors of connecting to BigQuery and running its jobs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BigQueryError {
    /// The target's settings cannot be used (a missing `project`, a bad `method`, a keyfile
    /// that is not a service-account key…).
    #[error("{location}: {message}")]
    Config {
        /// The profile entry or setting.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// BigQuery ran the job and it failed (the SQL did not compile, a byte limit, a permission).
    /// `line`/`column` are BigQuery's position in the job's SQL (1-based) when it gave one.
    #[error("{context}{}: BigQuery job {job_id} failed ({reason}): {message}", at(*position))]
    Job {
        /// What the job was for (`models/staging/stg_orders.sql`, `dry run of …`).
        context: String,
        /// The job's id (`rainbow_…`), to find it in the console or `bq show -j`.
        job_id: String,
        /// BigQuery's reason code (`invalidQuery`, `bytesBilledLimitExceeded`, `accessDenied`…).
        reason: String,
        /// BigQuery's message.
        message: String,
        /// 1-based line and column in the job's SQL, when the message names them (`[3:15]`).
        position: Option<(u32, u32)>,
    },
    /// A request to BigQuery's API failed (unreachable endpoint, authentication, HTTP error,
    /// a dataset without permission).
    #[error("{context}: {message}")]
    Api {
        /// The request (`create dataset rainbow.main`, `get table …`).
        context: String,
        /// The client's or BigQuery's message.
        message: String,
        /// The HTTP status BigQuery answered with, when it answered.
        status: Option<i64>,
    },
    /// A job did not finish within the target's `job_execution_timeout_seconds`.
    #[error(
        "{context}: BigQuery job {job_id} did not finish in {seconds} s (job_execution_timeout_seconds)"
    )]
    Timeout {
        /// What the job was for.
        context: String,
        /// The job's id.
        job_id: String,
        /// The limit.
        seconds: u64,
    },
}

impl BigQueryError {
    /// The error of an API call made for `context`.
    pub(crate) fn api(context: &str) -> impl FnOnce(gcp_bigquery_client::error::BQError) -> Self {
        let context = context.to_owned();
        move |e| {
            use gcp_bigquery_client::error::BQError;
            let (message, status) = match &e {
                BQError::ResponseError { error } => {
                    (error.error.message.clone(), Some(error.error.code))
                }
                // The causes too: "error sending request" alone does not say why.
                other => {
                    let mut message = other.to_string();
                    let mut source = std::error::Error::source(other);
                    while let Some(cause) = source {
                        let text = cause.to_string();
                        if !message.contains(&text) {
                            message = format!("{message}: {text}");
                        }
                        source = cause.source();
                    }
                    (message, None)
                }
            };
            BigQueryError::Api {
                context,
                message,
                status,
            }
        }
    }

    /// HTTP 404: the dataset, table or job does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            BigQueryError::Api {
                status: Some(404),
                ..
            }
        )
    }
}

/// ` line L column C` when known.
fn at(position: Option<(u32, u32)>) -> String {
    match position {
        Some((l, c)) => format!(" line {l} column {c}"),
        None => String::new(),
    }
}

/// Result with [`BigQueryError`].
pub type Result<T, E = BigQueryError> = std::result::Result<T, E>;

/// BigQuery's position `[line:column]` in an error message (`Syntax error: Unexpected
/// identifier "x" at [3:15]`), 1-based.
pub(crate) fn position(message: &str) -> Option<(u32, u32)> {
    let start = message.rfind("at [")? + 4;
    let rest = &message[start..];
    let end = rest.find(']')?;
    let (line, column) = rest[..end].split_once(':')?;
    Some((line.trim().parse().ok()?, column.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_reads_bigquerys_line_and_column() {
        assert_eq!(
            position("Syntax error: Unexpected identifier \"selec\" at [3:15]"),
            Some((3, 15))
        );
        assert_eq!(
            position("Unrecognized name: x; Did you mean y? at [12:1]"),
            Some((12, 1))
        );
        assert_eq!(position("Access Denied: Table p:d.t"), None);
        assert_eq!(position("at [x:1]"), None);
    }
}
