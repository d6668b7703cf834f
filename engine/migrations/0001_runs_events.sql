-- Rainbow run storage, version 1. `{id}` is replaced by the backend's auto-increment primary key
-- type (SQLite: INTEGER PRIMARY KEY AUTOINCREMENT, PostgreSQL: BIGSERIAL PRIMARY KEY).
-- Timestamps are microseconds since the Unix epoch (UTC); JSON is stored as TEXT.
-- Every statement is idempotent so two processes may migrate at once.

CREATE TABLE IF NOT EXISTS runs (
    run_id        TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    job_name      TEXT,
    selection     TEXT NOT NULL,
    partition_key TEXT,
    tags          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    started_at    BIGINT,
    ended_at      BIGINT,
    heartbeat_at  BIGINT,
    pid           BIGINT,
    hostname      TEXT,
    reason        TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_status_time ON runs (status, created_at);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (created_at);

CREATE TABLE IF NOT EXISTS events (
    id            {id},
    run_id        TEXT NOT NULL,
    ts            BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    step_key      TEXT,
    asset_key     TEXT,
    partition_key TEXT,
    payload       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, id);

-- Materialization and observation history is read from the event log through this index.
CREATE INDEX IF NOT EXISTS events_materializations ON events (asset_key, id)
    WHERE kind IN ('materialization', 'observation');

-- The latest materialization (or changed observation) per asset partition; '' = unpartitioned.
CREATE TABLE IF NOT EXISTS asset_latest (
    asset_key     TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    ts            BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    code_version  TEXT,
    data_version  TEXT,
    metadata      TEXT NOT NULL,
    PRIMARY KEY (asset_key, partition_key)
);
CREATE INDEX IF NOT EXISTS asset_latest_by_time ON asset_latest (asset_key, ts);

CREATE TABLE IF NOT EXISTS check_results (
    id            {id},
    run_id        TEXT NOT NULL,
    asset_key     TEXT NOT NULL,
    partition_key TEXT,
    check_name    TEXT NOT NULL,
    ts            BIGINT NOT NULL,
    passed        BIGINT NOT NULL,
    severity      TEXT NOT NULL,
    blocking      BIGINT NOT NULL,
    description   TEXT,
    metadata      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS check_results_by_asset ON check_results (asset_key, check_name, id);
CREATE INDEX IF NOT EXISTS check_results_by_run ON check_results (run_id);
