//! The `[streaming]` section of the configuration: one place for the brokers, topic names, the
//! replication slot and the batch sizes of both processes.
//!
//! ```toml
//! [streaming]
//! brokers = "127.0.0.1:9092"   # bootstrap.servers
//! topic_prefix = ""            # topic of table products: "<prefix>products"
//! partitions = 3               # of the topics the speed layer creates
//! slot = "rainbow_cdc"         # the replication slot (cluster-wide name)
//! cdc_batch_size = 5000        # changes per poll of the slot
//! cdc_poll_interval_ms = 100   # pause after an empty poll
//! sink_group = "rainbow-speed" # consumer group (monitoring)
//! sink_max_batch_rows = 10000  # events per micro-batch
//! sink_max_batch_wait_ms = 500 # a micro-batch's wait after its first event
//! sink_compact_every_s = 300   # fold the change tables to the newest event per key; 0: never
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cdc::CdcSettings;
use crate::kafka::KafkaSettings;
use crate::sink::SinkSettings;
use crate::{Result, StreamingError};

/// The `[streaming]` settings (see the module docs for the keys and defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Prepended to every topic name.
    pub topic_prefix: String,
    /// Partitions of the topics the speed layer creates.
    pub partitions: i32,
    /// The replication slot.
    pub slot: String,
    /// Changes per poll of the slot.
    pub cdc_batch_size: usize,
    /// Pause after an empty poll, ms.
    pub cdc_poll_interval_ms: u64,
    /// The sink's consumer group.
    pub sink_group: String,
    /// Events per micro-batch at most.
    pub sink_max_batch_rows: usize,
    /// A micro-batch's wait after its first event, ms.
    pub sink_max_batch_wait_ms: u64,
    /// Seconds between compactions of the change tables (0: never).
    pub sink_compact_every_s: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: String::new(),
            partitions: 3,
            slot: "rainbow_cdc".into(),
            cdc_batch_size: 5_000,
            cdc_poll_interval_ms: 100,
            sink_group: "rainbow-speed".into(),
            sink_max_batch_rows: 10_000,
            sink_max_batch_wait_ms: 500,
            sink_compact_every_s: 300,
        }
    }
}

impl StreamingConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |key: &str, why: &str| Err(StreamingError::Setup(format!("[streaming] {key}: {why}")));
        if self.brokers.trim().is_empty() {
            return bad("brokers", "is empty (host:port of a Kafka broker)");
        }
        if !(1..=1_000).contains(&self.partitions) {
            return bad("partitions", "must be between 1 and 1000");
        }
        let slot_ok = !self.slot.is_empty()
            && self.slot.len() <= 63
            && self
                .slot
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !slot_ok {
            return bad(
                "slot",
                "a replication slot name is 1-63 lowercase letters, digits or underscores",
            );
        }
        if self.cdc_batch_size == 0 || self.sink_max_batch_rows == 0 {
            return bad("cdc_batch_size/sink_max_batch_rows", "must be at least 1");
        }
        if self
            .topic_prefix
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return bad(
                "topic_prefix",
                "topic names take only letters, digits, '.', '_' and '-'",
            );
        }
        Ok(())
    }

    /// The Kafka settings.
    pub fn kafka(&self) -> KafkaSettings {
        KafkaSettings {
            brokers: self.brokers.clone(),
            topic_prefix: self.topic_prefix.clone(),
            partitions: self.partitions,
        }
    }

    /// The CDC settings for the Rainbow DB at `database_url`.
    pub fn cdc(&self, database_url: &str) -> CdcSettings {
        let mut settings = CdcSettings::rainbow_db(database_url, &self.slot, self.kafka());
        settings.batch_size = self.cdc_batch_size;
        settings.poll_interval = Duration::from_millis(self.cdc_poll_interval_ms);
        settings
    }

    /// The sink settings.
    pub fn sink(&self) -> SinkSettings {
        let mut settings = SinkSettings::rainbow_db(self.kafka());
        settings.group_id = self.sink_group.clone();
        settings.max_batch_rows = self.sink_max_batch_rows;
        settings.max_batch_wait = Duration::from_millis(self.sink_max_batch_wait_ms);
        settings.compact_every =
            (self.sink_compact_every_s > 0).then(|| Duration::from_secs(self.sink_compact_every_s));
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        assert!(StreamingConfig::default().validate().is_ok());
        for (config, key) in [
            (
                StreamingConfig {
                    slot: "Rainbow-CDC".into(),
                    ..Default::default()
                },
                "slot",
            ),
            (
                StreamingConfig {
                    partitions: 0,
                    ..Default::default()
                },
                "partitions",
            ),
            (
                StreamingConfig {
                    topic_prefix: "a b".into(),
                    ..Default::default()
                },
                "topic_prefix",
            ),
            (
                StreamingConfig {
                    brokers: " ".into(),
                    ..Default::default()
                },
                "brokers",
            ),
        ] {
            let err = config.validate().expect_err(key).to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
