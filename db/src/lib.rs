//! Database plumbing shared by Rainbow's crates, and the Rainbow DB schema.
//!
//! - [`connect`]: a sqlx `Any` pool to SQLite (`sqlite://PATH`, WAL, foreign keys on) or
//!   PostgreSQL (`postgres://…`), so one set of queries serves both.
//! - [`migrate`]: ordered, recorded migrations; serialized by an advisory lock on PostgreSQL,
//!   race-tolerant on SQLite.
//! - [`source`]: the Rainbow DB (the e-commerce source) schema, the one copy used by the orders
//!   API and the pipeline.
//!
//! Knows nothing about HTTP, runs or assets.

use std::path::Path;
use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Connection, Row};

/// Which database a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The backend's name, as shown to users.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    }

    /// The auto-increment primary key type that replaces `{id}` in migrations.
    fn id_type(&self) -> &'static str {
        match self {
            Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Backend::Postgres => "BIGSERIAL PRIMARY KEY",
        }
    }
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The URL's scheme is neither `sqlite:` nor `postgres://`.
    #[error(
        "unsupported scheme `{0}` in the database URL; expected `sqlite://PATH` or `postgres://USER@HOST/DB`"
    )]
    UnsupportedScheme(String),
    /// Connecting failed; the URL is shown without its password.
    #[error("connecting to {url}")]
    Connect {
        /// The redacted URL.
        url: String,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// A migration statement failed.
    #[error("applying migration {version} of `{table}`: {statement}")]
    Migration {
        /// Version table.
        table: String,
        /// Migration version.
        version: i64,
        /// First line of the failing statement.
        statement: String,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// Another database operation failed.
    #[error("{context}")]
    Query {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
}

fn query_err(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> DbError {
    let context = context.into();
    move |source| DbError::Query { context, source }
}

/// How long a pooled connection may sit idle before it is pinged on acquire.
pub const IDLE_BEFORE_PING: Duration = Duration::from_secs(2);

/// A pool and its backend.
#[derive(Debug, Clone)]
pub struct Database {
    /// The pool.
    pub pool: AnyPool,
    /// Its backend.
    pub backend: Backend,
}

/// The backend a URL names.
pub fn backend_of(url: &str) -> Result<Backend, DbError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        let scheme = url.split(':').next().unwrap_or(url);
        Err(DbError::UnsupportedScheme(scheme.to_owned()))
    }
}

/// Connects a pool of at most `max_connections`. SQLite connections use WAL (readers never
/// block the writer), `synchronous = NORMAL` (durable across process crashes), a busy timeout,
/// a 64 MiB page cache and enforced foreign keys.
pub async fn connect(url: &str, max_connections: u32) -> Result<Database, DbError> {
    sqlx::any::install_default_drivers();
    let backend = backend_of(url)?;
    let options = AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(30))
        // A connection used within the last few seconds is handed out without a ping (a
        // round trip per acquire otherwise); one idle longer is pinged first, so a database
        // restart or a dropped idle connection costs no request (HikariCP's rule).
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_BEFORE_PING {
                    conn.ping().await?;
                }
                Ok(true)
            })
        });
    let options = match backend {
        Backend::Sqlite => options.after_connect(|conn, _meta| {
            Box::pin(async move {
                for pragma in [
                    "PRAGMA journal_mode = WAL",
                    "PRAGMA synchronous = NORMAL",
                    "PRAGMA busy_timeout = 30000",
                    "PRAGMA cache_size = -65536",
                    "PRAGMA foreign_keys = ON",
                ] {
                    sqlx::query(pragma).execute(&mut *conn).await?;
                }
                Ok(())
            })
        }),
        Backend::Postgres => options,
    };
    let connect_error = |source| DbError::Connect {
        url: redact(url),
        source,
    };
    // Whole-table reads (the extract, the CDC snapshot) legitimately take seconds: only a
    // statement slower than 10 s is worth a warning.
    let connect_options = <sqlx::any::AnyConnectOptions as std::str::FromStr>::from_str(url)
        .map_err(connect_error)?
        .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(10));
    let pool = options
        .connect_with(connect_options)
        .await
        .map_err(connect_error)?;
    Ok(Database { pool, backend })
}

/// `sqlite://PATH?mode=rwc` with the path percent-encoded (`%`, `?`, `#` and spaces would
/// otherwise change the URL's meaning).
pub fn sqlite_url(path: &Path) -> String {
    let mut encoded = String::new();
    for c in path.display().to_string().chars() {
        match c {
            '%' => encoded.push_str("%25"),
            '?' => encoded.push_str("%3F"),
            '#' => encoded.push_str("%23"),
            ' ' => encoded.push_str("%20"),
            c => encoded.push(c),
        }
    }
    format!("sqlite://{encoded}?mode=rwc")
}

/// The URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***{}", &url[..scheme_end], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

async fn applied_version(conn: &mut AnyConnection, table: &str) -> Result<i64, DbError> {
    let ctx = format!("reading the schema version in `{table}`");
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {table} (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)"
    )))
    .execute(&mut *conn)
    .await
    .map_err(query_err(ctx.clone()))?;
    let applied: Option<i64> =
        sqlx::query(AssertSqlSafe(format!("SELECT MAX(version) FROM {table}")))
            .fetch_one(&mut *conn)
            .await
            .and_then(|row| row.try_get::<Option<i64>, _>(0))
            .map_err(query_err(ctx))?;
    Ok(applied.unwrap_or(0))
}

static LAST_MICROS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Now, in microseconds since the Unix epoch (UTC) — how every timestamp of the Rainbow DB and
/// of run storage is stored. Strictly increasing within the process, so two events of one
/// process never share a timestamp and "written after" comparisons are exact. The one clock
/// reading of the project (the engine, the orders API and migrations use it).
pub fn now_micros() -> i64 {
    use std::sync::atomic::Ordering;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let mut prev = LAST_MICROS.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST_MICROS.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => prev = actual,
        }
    }
}

/// Applies every migration newer than the version recorded in `table`, each in its own
/// transaction (`{id}` in the SQL becomes the backend's auto-increment key; `--` comment lines
/// are dropped before splitting on `;`). On PostgreSQL an advisory lock keyed by `lock`
/// serializes concurrent migrators (`CREATE … IF NOT EXISTS` is not safe against a concurrent
/// creator there); on SQLite the loser of a race re-reads the version and carries on.
pub async fn migrate(
    db: &Database,
    table: &str,
    migrations: &[(i64, &str)],
    lock: i64,
) -> Result<(), DbError> {
    let mut conn = db
        .pool
        .acquire()
        .await
        .map_err(query_err("acquiring a connection to migrate"))?;
    if db.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(lock)
            .execute(&mut *conn)
            .await
            .map_err(query_err("locking the schema for migration"))?;
    }
    let mut result = Ok(());
    for &(version, sql) in migrations {
        match applied_version(&mut conn, table).await {
            Ok(v) if v >= version => continue,
            Ok(_) => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        if let Err(e) = apply(&mut conn, db.backend, table, version, sql).await {
            if matches!(applied_version(&mut conn, table).await, Ok(v) if v >= version) {
                continue;
            }
            result = Err(e);
            break;
        }
        tracing::debug!(table, version, "applied migration");
    }
    if db.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(lock)
            .execute(&mut *conn)
            .await
            .map_err(query_err("unlocking the schema after migration"))?;
    }
    result
}

async fn apply(
    conn: &mut AnyConnection,
    backend: Backend,
    table: &str,
    version: i64,
    sql: &str,
) -> Result<(), DbError> {
    let sql: String = sql
        .replace("{id}", backend.id_type())
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let ctx = format!("applying migration {version} of `{table}`");
    let mut tx = sqlx::Connection::begin(conn)
        .await
        .map_err(query_err(ctx.clone()))?;
    for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::query(AssertSqlSafe(statement.to_owned()))
            .execute(&mut *tx)
            .await
            .map_err(|source| DbError::Migration {
                table: table.to_owned(),
                version,
                statement: statement.lines().next().unwrap_or(statement).to_owned(),
                source,
            })?;
    }
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (version, applied_at) VALUES ($1, $2)"
    )))
    .bind(version)
    .bind(now_micros())
    .execute(&mut *tx)
    .await
    .map_err(query_err(ctx.clone()))?;
    tx.commit().await.map_err(query_err(ctx))
}

/// The Rainbow DB (source) schema.
pub mod source {
    use super::{Database, DbError};

    /// The migrations, in order.
    pub const MIGRATIONS: &[(i64, &str)] =
        &[(1, include_str!("../migrations/0001_rainbow_db.sql"))];

    /// Brings a database up to the current Rainbow DB schema.
    pub async fn migrate(db: &Database) -> Result<(), DbError> {
        super::migrate(db, "rainbow_db_schema", MIGRATIONS, 0x0052_4442_5343_4845).await
    }

    /// A column's storage class in the Rainbow DB.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ColumnKind {
        /// `BIGINT` or the id key.
        Int,
        /// `TEXT`.
        Text,
        /// `DOUBLE PRECISION`.
        Double,
    }

    /// One column of a Rainbow DB table.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ColumnDef {
        /// Name.
        pub name: String,
        /// Storage class.
        pub kind: ColumnKind,
        /// May be NULL.
        pub nullable: bool,
    }

    /// One Rainbow DB table, as its migration creates it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TableDef {
        /// Name.
        pub name: String,
        /// Columns in order.
        pub columns: Vec<ColumnDef>,
    }

    /// The Rainbow DB's tables and columns, read from the migrations (the one copy of the
    /// schema), in creation order.
    pub fn tables() -> Vec<TableDef> {
        let mut out: Vec<TableDef> = Vec::new();
        for (_, sql) in MIGRATIONS {
            let mut current: Option<TableDef> = None;
            for line in sql.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
                    let name = rest.split_whitespace().next().unwrap_or_default();
                    current = Some(TableDef {
                        name: name.to_owned(),
                        columns: Vec::new(),
                    });
                    continue;
                }
                if line.starts_with(");") {
                    out.extend(current.take());
                    continue;
                }
                let Some(table) = current.as_mut() else {
                    continue;
                };
                let mut words = line.split_whitespace();
                let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                    continue;
                };
                let kind = match kind.trim_end_matches(',') {
                    "{id}" | "BIGINT" => ColumnKind::Int,
                    "TEXT" => ColumnKind::Text,
                    "DOUBLE" => ColumnKind::Double,
                    _ => continue,
                };
                table.columns.push(ColumnDef {
                    name: name.to_owned(),
                    kind,
                    nullable: !line.contains("NOT NULL") && !line.contains("{id}"),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_is_read_from_the_migration() {
        let tables = source::tables();
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "customers",
                "sellers",
                "brands",
                "categories",
                "promotions",
                "payments",
                "products",
                "orders",
                "orderdetails"
            ]
        );
        let products = &tables[6];
        let col = |n: &str| {
            products
                .columns
                .iter()
                .find(|c| c.name == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        assert_eq!(products.columns.len(), 13);
        assert_eq!(col("id").kind, source::ColumnKind::Int);
        assert!(!col("id").nullable);
        assert_eq!(col("rating_average").kind, source::ColumnKind::Double);
        assert_eq!(col("name").kind, source::ColumnKind::Text);
        assert!(col("promotion_id").nullable);
        assert!(!col("seller_id").nullable);
    }

    #[test]
    fn urls() {
        assert_eq!(
            redact("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(
            sqlite_url(Path::new("/a b/c?.db")),
            "sqlite:///a%20b/c%3F.db?mode=rwc"
        );
        assert!(
            matches!(backend_of("mysql://x"), Err(DbError::UnsupportedScheme(s)) if s == "mysql")
        );
    }
}
