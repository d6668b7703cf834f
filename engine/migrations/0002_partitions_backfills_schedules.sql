-- Partitions, backfills, schedules and sensors. `{id}` as in 0001.

ALTER TABLE runs ADD COLUMN backfill_id TEXT;
ALTER TABLE runs ADD COLUMN run_key TEXT;
-- Identifies the process (one id per process start), so a reused pid is not mistaken for it.
ALTER TABLE runs ADD COLUMN worker_id TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS runs_by_run_key ON runs (run_key);
CREATE INDEX IF NOT EXISTS runs_by_backfill ON runs (backfill_id);

-- Keys of dynamic partitions definitions, added through the API/CLI.
CREATE TABLE IF NOT EXISTS dynamic_partitions (
    name          TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    added_at      BIGINT NOT NULL,
    PRIMARY KEY (name, partition_key)
);

-- Latest outcome per asset partition: 'materialized' or 'failed' (in progress = leased).
CREATE TABLE IF NOT EXISTS partition_status (
    asset_key     TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    status        TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    ts            BIGINT NOT NULL,
    PRIMARY KEY (asset_key, partition_key)
);

-- Who is computing an asset partition right now. A lease expires unless renewed, so a dead
-- process never blocks a partition for longer than the lease time.
CREATE TABLE IF NOT EXISTS partition_leases (
    asset_key     TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    owner         TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (asset_key, partition_key)
);
CREATE INDEX IF NOT EXISTS partition_leases_by_owner ON partition_leases (owner);

CREATE TABLE IF NOT EXISTS backfills (
    backfill_id   TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    selection     TEXT NOT NULL,
    request       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT,
    pid           BIGINT,
    hostname      TEXT,
    reason        TEXT
);
CREATE INDEX IF NOT EXISTS backfills_by_status ON backfills (status, created_at);

-- A backfill's units of work: some assets over some partitions, executed as one run.
CREATE TABLE IF NOT EXISTS backfill_units (
    backfill_id   TEXT NOT NULL,
    unit_id       BIGINT NOT NULL,
    status        TEXT NOT NULL,
    assets        TEXT NOT NULL,
    partitions    TEXT NOT NULL,
    deps          TEXT NOT NULL,
    attempts      BIGINT NOT NULL,
    run_id        TEXT,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (backfill_id, unit_id)
);

-- Every schedule and sensor evaluation.
CREATE TABLE IF NOT EXISTS ticks (
    id            {id},
    instigator    TEXT NOT NULL,
    kind          TEXT NOT NULL,
    tick_ts       BIGINT NOT NULL,
    status        TEXT NOT NULL,
    reason        TEXT,
    run_key       TEXT,
    run_id        TEXT,
    created_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS ticks_by_instigator_time ON ticks (instigator, tick_ts);

-- Cursors of schedules and sensors (last tick evaluated, last event seen).
CREATE TABLE IF NOT EXISTS instigator_state (
    name          TEXT PRIMARY KEY,
    cursor        TEXT NOT NULL,
    updated_at    BIGINT NOT NULL
);
