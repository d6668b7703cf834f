//! Kafka settings shared by the CDC process and the sink: brokers, topic names (one topic per
//! table, `<prefix><table>`, as the seed names them: `products` for table products), topic
//! creation, and the idempotent producer.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureProducer;

use crate::{Result, StreamingError};

/// Where the topics are and how they are named.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `bootstrap.servers`: `host:port[,host:port…]`.
    pub brokers: String,
    /// Prepended to every topic name (empty: the table's name, as in the seed).
    pub topic_prefix: String,
    /// Partitions of a topic the speed layer creates (the seed: 3).
    pub partitions: i32,
}

impl KafkaSettings {
    /// Settings for `brokers` with no prefix and 3 partitions per topic.
    pub fn new(brokers: impl Into<String>) -> KafkaSettings {
        KafkaSettings {
            brokers: brokers.into(),
            topic_prefix: String::new(),
            partitions: 3,
        }
    }

    /// The topic of a source table.
    pub fn topic(&self, table: &str) -> String {
        format!("{}{table}", self.topic_prefix)
    }

    /// The topic malformed messages are moved to, with headers naming where they came from.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}rainbow_dead_letters", self.topic_prefix)
    }

    /// A client configuration with the brokers set.
    pub fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config
    }

    /// The idempotent producer (no duplicates from its own retries; the speed layer does not
    /// rely on Kafka transactions).
    pub fn producer(&self) -> Result<FutureProducer> {
        self.client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(StreamingError::kafka("creating the Kafka producer"))
    }

    /// Creates the topics that do not exist yet (`partitions` each, replication 1).
    pub async fn ensure_topics(&self, topics: &[String]) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self
            .client()
            .create()
            .map_err(StreamingError::kafka("creating the Kafka admin client"))?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, self.partitions, TopicReplication::Fixed(1)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(&new, &options)
            .await
            .map_err(StreamingError::kafka(format!(
                "creating topics on the brokers {} (is a Kafka broker running there?)",
                self.brokers
            )))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(StreamingError::Setup(format!(
                        "creating the topic {topic}: {code}"
                    )));
                }
            }
        }
        Ok(())
    }
}
