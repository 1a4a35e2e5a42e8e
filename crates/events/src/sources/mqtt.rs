//! MQTT 3.1.1 with QoS 1 and a persistent session (clean session off, a stable
//! client id): what is published while Updraft is away waits in the broker, and a
//! message is acknowledged (PUBACK, in the order received, as MQTT requires) only
//! after its delivery.

use std::time::Duration;

use futures_util::StreamExt;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, Publish, QoS};
use serde::{Deserialize, Serialize};
use updraft_model::FieldError;

use super::{
    content_id, event_source, message_event, BoxError, Message, Messages, PasswordRef, SecretLookup, Settle, Source,
    CHECK_TIMEOUT,
};
use crate::delivery::{DeliverySpec, Destination};

pub const MQTT_EVENT_TYPE: &str = "dev.updraft.sources.mqtt";
pub const DEFAULT_MQTT_URL: &str = "mqtt://127.0.0.1:1883";
const MAX_TOPICS: usize = 16;
const MAX_FILTER: usize = 1024;
/// Messages in delivery at once; below mosquitto's default in-flight window of 20.
const IN_FLIGHT: usize = 10;
const KEEP_ALIVE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MqttSpec {
    /// `mqtt://host:port`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Topic filters (`+` and `#` wildcards), 1 to 16.
    pub topics: Vec<String>,
    /// The session's client id (default `updraft-{namespace}-{name}`); the broker
    /// keeps the session's messages under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordRef>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

fn default_url() -> String {
    DEFAULT_MQTT_URL.to_string()
}

/// `mqtt://host:port` as host and port.
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("mqtt://")?.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (rest, 1883),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    host_ok.then(|| (host.to_string(), port))
}

impl MqttSpec {
    pub fn validate(&self, at: impl Fn(&str) -> String) -> Result<(), FieldError> {
        if host_port(&self.url).is_none() {
            return Err(FieldError::new(
                at("url"),
                format!("{:?} is not an mqtt://host:port URL", self.url),
            ));
        }
        if self.topics.is_empty() || self.topics.len() > MAX_TOPICS {
            return Err(FieldError::new(
                at("topics"),
                format!("has {} filters; 1 to {MAX_TOPICS} allowed", self.topics.len()),
            ));
        }
        for (i, filter) in self.topics.iter().enumerate() {
            if filter.len() > MAX_FILTER || filter.contains('\0') || !rumqttc::valid_filter(filter) {
                return Err(FieldError::new(
                    format!("{}[{i}]", at("topics")),
                    format!(
                        "{filter:?} is not an MQTT topic filter: levels split by /, + for one whole level, # only as the last"
                    ),
                ));
            }
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(FieldError::new(
                    at("clientId"),
                    format!("{id:?} must be 1 to 128 letters, digits, - and _"),
                ));
            }
        }
        if let Some(user) = &self.username {
            if user.is_empty() || user.len() > 256 || user.chars().any(|c| c.is_control()) {
                return Err(FieldError::new(
                    at("username"),
                    "must be 1 to 256 characters without control characters",
                ));
            }
        }
        if let Some(password) = &self.password {
            if self.username.is_none() {
                return Err(FieldError::new(at("password"), "needs a username"));
            }
            password.secret_key_ref.validate(&at("password.secretKeyRef"))?;
        }
        Ok(())
    }
}

pub struct MqttSource {
    namespace: String,
    name: String,
    spec: MqttSpec,
    password: Option<String>,
}

impl MqttSource {
    pub fn new(
        namespace: &str,
        name: &str,
        spec: MqttSpec,
        secrets: &dyn SecretLookup,
    ) -> Result<MqttSource, FieldError> {
        let password = spec
            .password
            .as_ref()
            .map(|p| p.resolve("spec.password", namespace, secrets))
            .transpose()?;
        Ok(MqttSource {
            namespace: namespace.to_string(),
            name: name.to_string(),
            spec,
            password,
        })
    }

    fn options(&self, client_id: String, persistent: bool) -> MqttOptions {
        let (host, port) = host_port(&self.spec.url).unwrap_or_else(|| ("127.0.0.1".into(), 1883));
        let mut options = MqttOptions::new(client_id, host, port);
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(!persistent)
            .set_manual_acks(true);
        if let Some(user) = &self.spec.username {
            options.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        options
    }

    fn client_id(&self) -> String {
        self.spec
            .client_id
            .clone()
            .unwrap_or_else(|| format!("updraft-{}-{}", self.namespace, self.name))
    }
}

struct PubAck {
    client: AsyncClient,
    publish: Publish,
}

#[async_trait::async_trait]
impl Settle for PubAck {
    async fn ack(self: Box<Self>) -> Result<(), BoxError> {
        self.client.ack(&self.publish).await?;
        Ok(())
    }
    /// MQTT 3.1.1 has no negative acknowledgement: the broker sends the message
    /// again when the session reconnects, so the connection is dropped.
    async fn nack(self: Box<Self>, after: Duration) -> Result<(), BoxError> {
        tokio::time::sleep(after).await;
        Err("a message was not delivered; reconnecting so the broker sends it again".into())
    }
}

#[async_trait::async_trait]
impl Source for MqttSource {
    fn kind(&self) -> &'static str {
        "mqtt"
    }

    fn in_flight(&self) -> usize {
        IN_FLIGHT
    }

    async fn open(&self) -> Result<Messages, BoxError> {
        let (client, mut events) = AsyncClient::new(self.options(self.client_id(), true), IN_FLIGHT);
        let filters: Vec<rumqttc::SubscribeFilter> = self
            .spec
            .topics
            .iter()
            .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce))
            .collect();
        client.subscribe_many(filters).await?;
        // The event loop must keep running while messages are delivered (keep-alives,
        // acknowledgements), so it has a task of its own, ended with the stream.
        let (sender, received) = tokio::sync::mpsc::channel::<Result<Publish, BoxError>>(IN_FLIGHT);
        tokio::spawn(async move {
            loop {
                let polled = tokio::select! {
                    polled = events.poll() => polled,
                    _ = sender.closed() => return,
                };
                let forwarded = match polled {
                    Ok(MqttEvent::Incoming(Packet::Publish(publish))) => sender.send(Ok(publish)).await,
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let _ = sender.send(Err(e.into())).await;
                        return;
                    }
                };
                if forwarded.is_err() {
                    return;
                }
            }
        });
        let source = event_source(&self.namespace, "mqtt", &self.name);
        let stream = tokio_stream_from(received).map(move |read| {
            let publish = read?;
            // MQTT 3.1.1 names no message; a resent one keeps its packet id, topic
            // and payload, so they name it.
            let id = content_id(&[publish.topic.as_bytes(), &publish.pkid.to_be_bytes(), &publish.payload]);
            let event = message_event(
                id,
                MQTT_EVENT_TYPE,
                source.clone(),
                Some(&publish.topic),
                None,
                &publish.payload,
            )?;
            Ok(Message {
                event,
                settle: Box::new(PubAck {
                    client: client.clone(),
                    publish,
                }),
            })
        });
        Ok(stream.boxed())
    }

    async fn check(&self) -> Result<(), FieldError> {
        let options = self.options(format!("{}-check", self.client_id()), false);
        let (client, mut events) = AsyncClient::new(options, 1);
        let connected = tokio::time::timeout(CHECK_TIMEOUT, async {
            loop {
                match events.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        let _ = client.try_disconnect();
        match connected {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(FieldError::new(
                "spec.url",
                format!("cannot connect to the MQTT broker: {e}"),
            )),
            Err(_) => Err(FieldError::new("spec.url", "the MQTT broker did not answer within 5 s")),
        }
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(topics: &[&str]) -> MqttSpec {
        MqttSpec {
            url: DEFAULT_MQTT_URL.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            client_id: None,
            username: None,
            password: None,
            sink: Destination::service("hello", None),
            delivery: None,
        }
    }

    fn error(spec: MqttSpec) -> String {
        spec.validate(|f| format!("spec.{f}")).unwrap_err().to_string()
    }

    #[test]
    fn topic_filters_and_urls_are_checked() {
        assert!(spec(&["sensors/+/temp", "alerts/#"])
            .validate(|f| format!("spec.{f}"))
            .is_ok());
        assert!(error(spec(&["sensors/#/temp"])).starts_with("spec.topics[0]: "));
        assert!(error(spec(&["a", "sensors+"])).starts_with("spec.topics[1]: "));
        assert!(error(spec(&[])).starts_with("spec.topics: has 0"));
        assert!(error(MqttSpec {
            url: "tcp://h:1".into(),
            ..spec(&["a"])
        })
        .starts_with("spec.url: "));
        assert_eq!(host_port("mqtt://127.0.0.1:1884"), Some(("127.0.0.1".into(), 1884)));
        assert_eq!(host_port("mqtt://broker"), Some(("broker".into(), 1883)));
        assert_eq!(host_port("mqtt://:1"), None);
    }
}
