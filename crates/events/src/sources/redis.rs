//! Redis Streams, with Knative RedisStreamSource's model: a consumer group per
//! source, each entry acknowledged (`XACK`) after its delivery. Entries left pending
//! (by a crash, by a failed delivery, by a consumer that died) are read again: this
//! consumer's own at connect, and anyone's once idle long enough (`XAUTOCLAIM`).

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Client};
use serde::{Deserialize, Serialize};
use updraft_model::FieldError;

use super::{
    event_source, message_event, refuse_inline_password, with_password, BoxError, Message, Messages, PasswordRef,
    SecretLookup, Settle, Source, CHECK_TIMEOUT,
};
use crate::delivery::{DeliverySpec, Destination};

/// The CloudEvents type of a stream entry, as Knative's RedisStreamSource sends it.
pub const REDIS_STREAM_EVENT_TYPE: &str = "dev.knative.sources.redisstream";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
const MAX_COUNT: usize = 1000;
/// How long a read waits for new entries before it looks for idle ones again.
const BLOCK_MS: usize = 1000;
/// Entries pending this long with no acknowledgement are claimed back, at least.
const MIN_CLAIM_IDLE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RedisStreamSpec {
    /// `redis://host:port/db`; the password comes from `password`.
    #[serde(default = "default_url")]
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordRef>,
    pub stream: String,
    /// The consumer group (default `updraft-{namespace}-{name}`), created with the
    /// stream when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Entries in delivery at once, 1 to 1000.
    #[serde(default = "default_count")]
    pub count: usize,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

fn default_url() -> String {
    DEFAULT_REDIS_URL.to_string()
}
fn default_count() -> usize {
    10
}

fn check_key(field: &str, key: &str) -> Result<(), FieldError> {
    if key.is_empty() || key.len() > 512 || key.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(FieldError::new(
            field,
            format!("{key:?} must be 1 to 512 characters without spaces or control characters"),
        ));
    }
    Ok(())
}

impl RedisStreamSpec {
    pub fn validate(&self, at: impl Fn(&str) -> String) -> Result<(), FieldError> {
        if !self.address.starts_with("redis://") {
            return Err(FieldError::new(
                at("address"),
                format!("{:?} is not a redis://host:port URL", self.address),
            ));
        }
        refuse_inline_password(&at("address"), &self.address)?;
        redis::parse_redis_url(&self.address)
            .filter(|url| url.host_str().is_some_and(|h| !h.is_empty()))
            .ok_or_else(|| FieldError::new(at("address"), format!("{:?} is not a Redis URL", self.address)))?;
        if let Some(password) = &self.password {
            password.secret_key_ref.validate(&at("password.secretKeyRef"))?;
        }
        check_key(&at("stream"), &self.stream)?;
        if let Some(group) = &self.group {
            check_key(&at("group"), group)?;
        }
        if !(1..=MAX_COUNT).contains(&self.count) {
            return Err(FieldError::new(
                at("count"),
                format!("is {}; 1 to {MAX_COUNT} allowed", self.count),
            ));
        }
        Ok(())
    }
}

pub struct RedisStreamSource {
    namespace: String,
    name: String,
    spec: RedisStreamSpec,
    client: Client,
    group: String,
    claim_idle: Duration,
}

impl RedisStreamSource {
    pub fn new(
        namespace: &str,
        name: &str,
        spec: RedisStreamSpec,
        secrets: &dyn SecretLookup,
    ) -> Result<RedisStreamSource, FieldError> {
        let password = spec
            .password
            .as_ref()
            .map(|p| p.resolve("spec.password", namespace, secrets))
            .transpose()?;
        let client = Client::open(with_password(&spec.address, password.as_deref()))
            .map_err(|e| FieldError::new("spec.address", e.to_string()))?;
        let policy = spec.delivery.clone().unwrap_or_default().policy(None);
        Ok(RedisStreamSource {
            namespace: namespace.to_string(),
            name: name.to_string(),
            group: spec
                .group
                .clone()
                .unwrap_or_else(|| format!("updraft-{namespace}-{name}")),
            claim_idle: (Duration::from_micros(policy.timeout_us) * (policy.retries + 2)).max(MIN_CLAIM_IDLE),
            client,
            spec,
        })
    }

    async fn connect(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        // Reads block for up to BLOCK_MS; the client's default answer timeout is shorter.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CHECK_TIMEOUT))
            .set_response_timeout(None);
        self.client.get_multiplexed_async_connection_with_config(&config).await
    }
}

struct Xack {
    connection: MultiplexedConnection,
    stream: String,
    group: String,
    id: String,
}

#[async_trait::async_trait]
impl Settle for Xack {
    async fn ack(mut self: Box<Self>) -> Result<(), BoxError> {
        let _: usize = self.connection.xack(&self.stream, &self.group, &[&self.id]).await?;
        Ok(())
    }
    /// The entry stays pending, and is claimed back once idle.
    async fn nack(self: Box<Self>, _: Duration) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Where a read is: this consumer's pending entries first, then new ones.
struct Reader {
    connection: MultiplexedConnection,
    acks: MultiplexedConnection,
    stream: String,
    group: String,
    consumer: String,
    count: usize,
    claim_idle: Duration,
    pending_from: Option<String>,
    last_claim: Option<tokio::time::Instant>,
    ready: VecDeque<StreamId>,
}

impl Reader {
    async fn next(&mut self) -> Result<StreamId, redis::RedisError> {
        loop {
            if let Some(entry) = self.ready.pop_front() {
                return Ok(entry);
            }
            if let Some(from) = self.pending_from.take() {
                let options = StreamReadOptions::default()
                    .group(&self.group, &self.consumer)
                    .count(self.count);
                let reply: Option<StreamReadReply> = self
                    .connection
                    .xread_options(&[&self.stream], &[&from], &options)
                    .await?;
                let entries: Vec<StreamId> = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
                if let Some(last) = entries.last() {
                    self.pending_from = Some(last.id.clone());
                }
                self.ready.extend(entries);
                continue;
            }
            if self.last_claim.is_none_or(|t| t.elapsed() >= self.claim_idle / 2) {
                self.last_claim = Some(tokio::time::Instant::now());
                let reply: StreamAutoClaimReply = self
                    .connection
                    .xautoclaim_options(
                        &self.stream,
                        &self.group,
                        &self.consumer,
                        self.claim_idle.as_millis() as u64,
                        "0-0",
                        StreamAutoClaimOptions::default().count(self.count),
                    )
                    .await?;
                self.ready.extend(reply.claimed);
                continue;
            }
            let options = StreamReadOptions::default()
                .group(&self.group, &self.consumer)
                .count(self.count)
                .block(BLOCK_MS);
            let reply: Option<StreamReadReply> =
                self.connection.xread_options(&[&self.stream], &[">"], &options).await?;
            self.ready
                .extend(reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids));
        }
    }
}

/// An entry's fields as a JSON object of text (binary values base64).
fn entry_data(entry: &StreamId) -> Vec<u8> {
    use base64::Engine;
    let fields: serde_json::Map<String, serde_json::Value> = entry
        .map
        .iter()
        .map(|(field, value)| {
            let text = match redis::from_redis_value_ref::<Vec<u8>>(value) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => text,
                    Err(e) => base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                },
                Err(_) => String::new(),
            };
            (field.clone(), serde_json::Value::String(text))
        })
        .collect();
    serde_json::to_vec(&fields).unwrap_or_default()
}

#[async_trait::async_trait]
impl Source for RedisStreamSource {
    fn kind(&self) -> &'static str {
        "redisstream"
    }

    fn in_flight(&self) -> usize {
        self.spec.count
    }

    async fn open(&self) -> Result<Messages, BoxError> {
        let mut connection = self.connect().await?;
        let created: Result<(), redis::RedisError> = connection
            .xgroup_create_mkstream(&self.spec.stream, &self.group, "0")
            .await;
        if let Err(e) = created {
            if e.code() != Some("BUSYGROUP") {
                return Err(e.into());
            }
        }
        let acks = self.connect().await?;
        let reader = Reader {
            connection,
            acks,
            stream: self.spec.stream.clone(),
            group: self.group.clone(),
            consumer: format!("updraft-{}", self.name),
            count: self.spec.count,
            claim_idle: self.claim_idle,
            pending_from: Some("0".to_string()),
            last_claim: None,
            ready: VecDeque::new(),
        };
        let source = event_source(&self.namespace, "redisstream", &self.name);
        Ok(futures_util::stream::unfold(reader, move |mut reader| {
            let source = source.clone();
            async move {
                let read = match reader.next().await {
                    Ok(entry) => message_event(
                        format!("{}-{}", reader.stream, entry.id),
                        REDIS_STREAM_EVENT_TYPE,
                        source,
                        Some(&reader.stream),
                        Some("application/json"),
                        &entry_data(&entry),
                    )
                    .map(|event| Message {
                        event,
                        settle: Box::new(Xack {
                            connection: reader.acks.clone(),
                            stream: reader.stream.clone(),
                            group: reader.group.clone(),
                            id: entry.id,
                        }),
                    }),
                    Err(e) => Err(e.into()),
                };
                Some((read, reader))
            }
        })
        .boxed())
    }

    async fn check(&self) -> Result<(), FieldError> {
        let checked = tokio::time::timeout(CHECK_TIMEOUT, async {
            let mut connection = self.connect().await?;
            redis::cmd("PING").query_async::<String>(&mut connection).await
        })
        .await;
        match checked {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(FieldError::new("spec.address", format!("cannot use Redis: {e}"))),
            Err(_) => Err(FieldError::new("spec.address", "Redis did not answer within 5 s")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RedisStreamSpec {
        RedisStreamSpec {
            address: DEFAULT_REDIS_URL.into(),
            password: None,
            stream: "orders".into(),
            group: None,
            count: 10,
            sink: Destination::service("hello", None),
            delivery: None,
        }
    }

    fn error(spec: RedisStreamSpec) -> String {
        spec.validate(|f| format!("spec.{f}")).unwrap_err().to_string()
    }

    #[test]
    fn specs_are_checked_field_by_field() {
        assert!(spec().validate(|f| format!("spec.{f}")).is_ok());
        assert!(error(RedisStreamSpec {
            address: "127.0.0.1:6379".into(),
            ..spec()
        })
        .starts_with("spec.address: "));
        assert!(error(RedisStreamSpec {
            address: "redis://:secret@h:1".into(),
            ..spec()
        })
        .contains("carries a password"));
        assert!(error(RedisStreamSpec {
            stream: "a b".into(),
            ..spec()
        })
        .starts_with("spec.stream: "));
        assert!(error(RedisStreamSpec { count: 0, ..spec() }).starts_with("spec.count: is 0"));
    }
}
