//! The change event: what one row change is, how wal2json (format 2) describes it, and the
//! Debezium envelope it travels in on Kafka.
//!
//! Wire shape (value; the key is the primary key as a JSON object, e.g. `{"id":7}`):
//!
//! ```json
//! {"before": null, "after": {"id": 7, "name": "…"}, "op": "c", "ts_ms": 1764489600123,
//!  "source": {"connector": "rainbow", "db": "rainbow", "schema": "public", "table": "orders",
//!             "txId": 812, "lsn": 23876120, "commit_lsn": 23876480, "ts_ms": 1764489600100,
//!             "snapshot": "false"}}
//! ```
//!
//! `op` is Debezium's: `c` insert, `u` update, `d` delete, `r` a snapshot read. `lsn` is the
//! change's position in the WAL and `commit_lsn` its transaction's commit (both as integers);
//! `source.ts_ms` the commit time in ms. Debezium consumers ignore the extra `commit_lsn`.
//! <https://debezium.io/documentation/reference/stable/connectors/postgresql.html#postgresql-events>

use std::fmt;

use serde_json::{Map, Value, json};

/// A PostgreSQL WAL position (`pg_lsn`), written `X/Y` (two hexadecimal 32-bit halves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses `X/Y`; `None` if it is not a `pg_lsn`.
    pub fn parse(text: &str) -> Option<Lsn> {
        let (hi, lo) = text.trim().split_once('/')?;
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        (hi <= u64::from(u32::MAX) && lo <= u64::from(u32::MAX)).then_some(Lsn((hi << 32) | lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Debezium's operation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `c`: a row was inserted.
    Create,
    /// `u`: a row was updated.
    Update,
    /// `d`: a row was deleted.
    Delete,
    /// `r`: a row read by the initial snapshot.
    Read,
}

impl Op {
    /// The one-letter code.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
        }
    }

    /// The operation of a one-letter code.
    pub fn from_code(code: &str) -> Option<Op> {
        Some(match code {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            _ => return None,
        })
    }
}

/// One row change.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// Source schema (`public`).
    pub schema: String,
    /// Source table.
    pub table: String,
    /// What happened.
    pub op: Op,
    /// The primary key's columns and values.
    pub key: Map<String, Value>,
    /// The row before (updates and deletes: the replica identity's columns), if known.
    pub before: Option<Map<String, Value>>,
    /// The row after (inserts, updates, snapshot reads).
    pub after: Option<Map<String, Value>>,
    /// The change's WAL position.
    pub lsn: Lsn,
    /// Its transaction's commit position (a snapshot read: the slot's start).
    pub commit_lsn: Lsn,
    /// Commit time, µs since the Unix epoch.
    pub commit_time_us: i64,
    /// Transaction id (0 for snapshot reads).
    pub xid: i64,
}

impl ChangeEvent {
    /// The Kafka message key: the primary key as a JSON object with sorted member names.
    pub fn key_json(&self) -> String {
        Value::Object(self.key.clone()).to_string()
    }

    /// The Kafka message value: the Debezium envelope; `db` names the source database.
    pub fn value_json(&self, db: &str, now_ms: i64) -> String {
        json!({
            "before": self.before,
            "after": self.after,
            "op": self.op.code(),
            "ts_ms": now_ms,
            "source": {
                "connector": "rainbow",
                "db": db,
                "schema": self.schema,
                "table": self.table,
                "txId": self.xid,
                "lsn": self.lsn.0,
                "commit_lsn": self.commit_lsn.0,
                "ts_ms": self.commit_time_us.div_euclid(1000),
                "snapshot": if self.op == Op::Read { "true" } else { "false" },
            },
        })
        .to_string()
    }

    /// Reads a message back; the error says what is missing or malformed.
    pub fn from_message(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<ChangeEvent, String> {
        let key: Value = match key {
            Some(k) => {
                serde_json::from_slice(k).map_err(|e| format!("the key is not JSON: {e}"))?
            }
            None => return Err("the message has no key".into()),
        };
        let Value::Object(key) = key else {
            return Err("the key is not a JSON object".into());
        };
        let value: Value = match value {
            Some(v) => {
                serde_json::from_slice(v).map_err(|e| format!("the value is not JSON: {e}"))?
            }
            None => return Err("the message has no value (a tombstone)".into()),
        };
        let op = value
            .get("op")
            .and_then(Value::as_str)
            .and_then(Op::from_code)
            .ok_or("`op` is missing or not one of c, u, d, r")?;
        let source = value
            .get("source")
            .and_then(Value::as_object)
            .ok_or("`source` is missing")?;
        let text = |name: &str| {
            source
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("`source.{name}` is missing"))
        };
        let int = |name: &str| {
            source
                .get(name)
                .and_then(Value::as_i64)
                .ok_or_else(|| format!("`source.{name}` is missing or not an integer"))
        };
        let row = |name: &str| -> Result<Option<Map<String, Value>>, String> {
            match value.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Object(m)) => Ok(Some(m.clone())),
                Some(_) => Err(format!("`{name}` is not an object")),
            }
        };
        let after = row("after")?;
        if after.is_none() && op != Op::Delete {
            return Err(format!("`after` is missing for op `{}`", op.code()));
        }
        Ok(ChangeEvent {
            schema: text("schema")?,
            table: text("table")?,
            op,
            key,
            before: row("before")?,
            after,
            lsn: Lsn(u64::try_from(int("lsn")?).map_err(|_| "`source.lsn` is negative")?),
            commit_lsn: Lsn(
                u64::try_from(int("commit_lsn")?).map_err(|_| "`source.commit_lsn` is negative")?
            ),
            commit_time_us: int("ts_ms")?.saturating_mul(1000),
            xid: source.get("txId").and_then(Value::as_i64).unwrap_or(0),
        })
    }
}

/// One wal2json (format 2) row, decoded: a transaction boundary or changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Wal2Json {
    /// `B`: a transaction begins.
    Begin,
    /// `C`: it commits; the commit time in µs when wal2json gave one.
    Commit {
        /// Commit time, µs since the Unix epoch.
        time_us: Option<i64>,
    },
    /// `I`, `U`, `D`: row changes (a key change is a delete and an insert). Their
    /// `commit_lsn` and `commit_time_us` are filled in when the commit is read.
    Changes(Vec<ChangeEvent>),
    /// Anything else (`T` truncate, `M` message): nothing to capture.
    Other(String),
}

/// Decodes one wal2json format-2 row (`include-lsn`, `include-pk`, `include-xids`,
/// `include-timestamp` on) found at `lsn`.
pub fn decode_wal2json(data: &str, lsn: Lsn) -> Result<Wal2Json, String> {
    let row: Value = serde_json::from_str(data).map_err(|e| format!("not JSON: {e}"))?;
    let action = row
        .get("action")
        .and_then(Value::as_str)
        .ok_or("no `action`")?;
    let xid = row.get("xid").and_then(Value::as_i64).unwrap_or(0);
    let columns = |name: &str| -> Result<Option<Map<String, Value>>, String> {
        let Some(list) = row.get(name) else {
            return Ok(None);
        };
        let list = list
            .as_array()
            .ok_or_else(|| format!("`{name}` is not an array"))?;
        let mut out = Map::new();
        for column in list {
            let column_name = column
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("a column of `{name}` has no name"))?;
            out.insert(
                column_name.to_owned(),
                column.get("value").cloned().unwrap_or(Value::Null),
            );
        }
        Ok(Some(out))
    };
    match action {
        "B" => Ok(Wal2Json::Begin),
        "C" => Ok(Wal2Json::Commit {
            time_us: row
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(parse_timestamp_us),
        }),
        "I" | "U" | "D" => {
            let schema = row
                .get("schema")
                .and_then(Value::as_str)
                .ok_or("no `schema`")?
                .to_owned();
            let table = row
                .get("table")
                .and_then(Value::as_str)
                .ok_or("no `table`")?
                .to_owned();
            let pk: Vec<String> = row
                .get("pk")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if pk.is_empty() {
                return Err(format!("{schema}.{table} has no primary key"));
            }
            let key_of = |row: &Map<String, Value>| -> Result<Map<String, Value>, String> {
                pk.iter()
                    .map(|c| {
                        row.get(c).cloned().map(|v| (c.clone(), v)).ok_or_else(|| {
                            format!("{schema}.{table}: the key column {c} is missing")
                        })
                    })
                    .collect()
            };
            let after = columns("columns")?;
            let identity = columns("identity")?;
            let event = |op, key, before, after| ChangeEvent {
                schema: schema.clone(),
                table: table.clone(),
                op,
                key,
                before,
                after,
                lsn,
                commit_lsn: Lsn::default(),
                commit_time_us: 0,
                xid,
            };
            let events = match action {
                "I" => {
                    let after = after.ok_or("an insert without `columns`")?;
                    vec![event(Op::Create, key_of(&after)?, None, Some(after))]
                }
                "U" => {
                    let after = after.ok_or("an update without `columns`")?;
                    let key = key_of(&after)?;
                    match identity {
                        // The key changed: the old row is gone, a new one exists.
                        Some(old) if key_of(&old)? != key => vec![
                            event(Op::Delete, key_of(&old)?, Some(old), None),
                            event(Op::Create, key, None, Some(after)),
                        ],
                        old => vec![event(Op::Update, key, old, Some(after))],
                    }
                }
                _ => {
                    let old = identity.ok_or("a delete without `identity`")?;
                    vec![event(Op::Delete, key_of(&old)?, Some(old), None)]
                }
            };
            Ok(Wal2Json::Changes(events))
        }
        other => Ok(Wal2Json::Other(other.to_owned())),
    }
}

/// `2026-11-30 08:48:01.123456+00` (PostgreSQL's timestamptz text) as µs since the epoch.
fn parse_timestamp_us(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
        .ok()
        .map(|t| t.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_read_and_print_as_postgresql_writes_them() {
        let lsn = Lsn::parse("16/B374D848").expect("lsn");
        assert_eq!(lsn.0, (0x16 << 32) | 0xB374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!(Lsn::parse("nonsense").is_none());
        assert!(Lsn::parse("1/2/3").is_none());
        assert!(Lsn::parse("100000000/0").is_none());
    }

    #[test]
    fn wal2json_rows_become_events() {
        let lsn = Lsn(10);
        let insert = r#"{"action":"I","xid":7,"schema":"public","table":"orders","columns":[{"name":"id","type":"bigint","value":5},{"name":"status","type":"text","value":"new"}],"pk":[{"name":"id","type":"bigint"}]}"#;
        let Ok(Wal2Json::Changes(events)) = decode_wal2json(insert, lsn) else {
            panic!("an insert")
        };
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].op, Op::Create);
        assert_eq!(events[0].key_json(), r#"{"id":5}"#);
        assert_eq!(events[0].xid, 7);
        // A key change is a delete of the old key and an insert of the new one.
        let update = r#"{"action":"U","schema":"public","table":"orders","columns":[{"name":"id","type":"bigint","value":6}],"identity":[{"name":"id","type":"bigint","value":5}],"pk":[{"name":"id","type":"bigint"}]}"#;
        let Ok(Wal2Json::Changes(events)) = decode_wal2json(update, lsn) else {
            panic!("an update")
        };
        let ops: Vec<_> = events.iter().map(|e| (e.op, e.key_json())).collect();
        assert_eq!(
            ops,
            [
                (Op::Delete, r#"{"id":5}"#.to_owned()),
                (Op::Create, r#"{"id":6}"#.to_owned())
            ]
        );
        let delete = r#"{"action":"D","schema":"public","table":"orders","identity":[{"name":"id","type":"bigint","value":6}],"pk":[{"name":"id","type":"bigint"}]}"#;
        assert!(
            matches!(decode_wal2json(delete, lsn), Ok(Wal2Json::Changes(e)) if e[0].op == Op::Delete && e[0].after.is_none())
        );
        let commit = r#"{"action":"C","timestamp":"2026-11-30 08:48:01.5+00"}"#;
        assert_eq!(
            decode_wal2json(commit, lsn),
            Ok(Wal2Json::Commit {
                time_us: Some(1_796_028_481_500_000)
            })
        );
        assert!(decode_wal2json("{", lsn).is_err());
        let no_pk = r#"{"action":"I","schema":"public","table":"t","columns":[]}"#;
        assert!(decode_wal2json(no_pk, lsn).is_err());
    }

    #[test]
    fn the_envelope_reads_back_and_bad_messages_say_why() {
        let mut after = Map::new();
        after.insert("id".into(), json!(1));
        let mut key = Map::new();
        key.insert("id".into(), json!(1));
        let event = ChangeEvent {
            schema: "public".into(),
            table: "products".into(),
            op: Op::Update,
            key,
            before: None,
            after: Some(after),
            lsn: Lsn(100),
            commit_lsn: Lsn(120),
            commit_time_us: 1_764_492_481_500_000,
            xid: 3,
        };
        let value = event.value_json("rainbow", 0);
        let back =
            ChangeEvent::from_message(Some(event.key_json().as_bytes()), Some(value.as_bytes()))
                .expect("reads back");
        assert_eq!(back, event);
        for (key, value, why) in [
            (None, Some(&b"{}"[..]), "no key"),
            (Some(&b"[1]"[..]), Some(&b"{}"[..]), "not a JSON object"),
            (Some(&b"{}"[..]), Some(&b"nope"[..]), "not JSON"),
            (Some(&b"{}"[..]), Some(&br#"{"op":"x"}"#[..]), "`op`"),
            (Some(&b"{}"[..]), None, "tombstone"),
        ] {
            let err = ChangeEvent::from_message(key, value).expect_err(why);
            assert!(err.contains(why), "{err}");
        }
    }
}
