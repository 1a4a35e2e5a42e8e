//! `updraft trigger`, `updraft source`, `updraft triggers`, `updraft broker(s)` and
//! `updraft event send`.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use updraft_api::client::{decode, full};
use updraft_api::requests::BrokerRequest;
use updraft_api::views::{AcceptedView, TriggerDetailView};
use updraft_events::announce::PlatformSpec;
use updraft_events::cron::CatchUp;
use updraft_events::delivery::{BackoffPolicy, DeliverySpec, Destination};
use updraft_events::filter::Filter;
use updraft_events::sources::mqtt::{MqttSpec, DEFAULT_MQTT_URL};
use updraft_events::sources::rabbitmq::{RabbitMqSpec, DEFAULT_RABBITMQ_URL};
use updraft_events::sources::redis::{RedisStreamSpec, DEFAULT_REDIS_URL};
use updraft_events::sources::PasswordRef;
use updraft_events::trigger::{CronSpec, EventSpec, NatsSpec, TriggerSpec, DEFAULT_BROKER, DEFAULT_NATS_URL};
use updraft_events::webhook::{Provider, WebhookSpec};
use updraft_model::secret::SecretKeyRef;

use crate::client::{ApiClient, CliError};
use crate::output::{print_listing, print_structured};
use crate::{ListScope, NamespaceArg, Output};

#[derive(Args)]
pub struct TargetArgs {
    /// The service events go to (through the gateway, so one at zero is woken).
    #[arg(long, required_unless_present_any = ["sink_uri", "sink_broker"], conflicts_with_all = ["sink_uri", "sink_broker"])]
    target: Option<String>,
    /// The path under the service events are POSTed to.
    #[arg(long, requires = "target")]
    path: Option<String>,
    /// Send events to this http:// URL instead of a service.
    #[arg(long, conflicts_with = "sink_broker")]
    sink_uri: Option<String>,
    /// Send events into this broker of the namespace, for its triggers to route.
    #[arg(long)]
    sink_broker: Option<String>,
}

impl TargetArgs {
    fn destination(&self) -> Destination {
        match (&self.target, &self.sink_uri, &self.sink_broker) {
            (Some(service), _, _) => Destination::service(service, self.path.as_deref()),
            (None, _, Some(broker)) => Destination::broker(broker),
            (None, uri, None) => Destination {
                reference: None,
                uri: uri.clone(),
            },
        }
    }
}

/// Knative's delivery spec as flags. Durations take ISO-8601 (`PT0.5S`) or `500ms`.
#[derive(Args)]
pub struct DeliveryArgs {
    /// Retries after the first attempt before giving up (default 3).
    #[arg(long)]
    retry: Option<u32>,
    /// `linear` (delay × n) or `exponential` (delay × 2^n).
    #[arg(long, value_parser = parse_backoff)]
    backoff_policy: Option<BackoffPolicy>,
    /// The backoff's base delay (default 200ms).
    #[arg(long, value_parser = parse_duration)]
    backoff_delay: Option<String>,
    /// Each attempt's time limit (default 30s).
    #[arg(long, value_parser = parse_duration)]
    delivery_timeout: Option<String>,
    /// The service that gets an event when its retries run out.
    #[arg(long, conflicts_with = "dead_letter_uri")]
    dead_letter: Option<String>,
    /// An http:// URL that gets an event when its retries run out.
    #[arg(long)]
    dead_letter_uri: Option<String>,
}

fn parse_backoff(s: &str) -> Result<BackoffPolicy, String> {
    match s {
        "linear" => Ok(BackoffPolicy::Linear),
        "exponential" => Ok(BackoffPolicy::Exponential),
        other => Err(format!("{other:?} is not linear or exponential")),
    }
}

/// ISO-8601 passes as it is; `500ms`-style durations become ISO-8601.
fn parse_duration(s: &str) -> Result<String, String> {
    if s.starts_with('P') {
        updraft_events::delivery::parse_iso8601("duration", s).map_err(|e| e.message)?;
        return Ok(s.to_string());
    }
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}; use 500ms, 2s or PT0.5S"))?;
    Ok(format!("PT{}S", d.as_secs_f64()))
}

impl DeliveryArgs {
    fn spec(&self) -> Option<DeliverySpec> {
        let dead_letter_sink = match (&self.dead_letter, &self.dead_letter_uri) {
            (Some(service), _) => Some(Destination::service(service, None)),
            (None, Some(uri)) => Some(Destination {
                reference: None,
                uri: Some(uri.clone()),
            }),
            (None, None) => None,
        };
        let spec = DeliverySpec {
            retry: self.retry,
            backoff_policy: self.backoff_policy,
            backoff_delay: self.backoff_delay.clone(),
            dead_letter_sink,
            timeout: self.delivery_timeout.clone(),
        };
        (spec != DeliverySpec::default()).then_some(spec)
    }
}

#[derive(Subcommand)]
pub enum TriggerCommand {
    /// Fire a service on a schedule: 6 fields with seconds, 5 fields, or @hourly-style.
    Cron(CronArgs),
    /// Deliver a broker's events that match filters to a service.
    Event(EventArgs),
    /// A trigger with its recent deliveries (firings, events, dead letters).
    Show {
        name: String,
        #[command(flatten)]
        ns: NamespaceArg,
        /// How many deliveries to show, newest first.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Delete a trigger or source; its pending deliveries go with it.
    Delete {
        name: String,
        #[command(flatten)]
        ns: NamespaceArg,
    },
}

#[derive(Args)]
pub struct CronArgs {
    name: String,
    /// e.g. "*/5 * * * * *" (every 5 s), "0 9 * * MON-FRI", "@hourly".
    #[arg(long)]
    schedule: String,
    /// IANA time zone the schedule is read in (default UTC).
    #[arg(long = "tz")]
    timezone: Option<String>,
    /// The event's data.
    #[arg(long, conflicts_with = "data_base64")]
    data: Option<String>,
    /// The event's data, base64-encoded (binary payloads).
    #[arg(long)]
    data_base64: Option<String>,
    /// The data's media type (default application/json when the data is JSON).
    #[arg(long)]
    content_type: Option<String>,
    /// Ticks missed while the server was down: skip them, or fire once for the latest.
    #[arg(long, default_value = "skip")]
    catch_up: CatchUp,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    delivery: DeliveryArgs,
    #[command(flatten)]
    ns: NamespaceArg,
}

#[derive(Args)]
pub struct EventArgs {
    name: String,
    /// The broker whose events it filters.
    #[arg(long, default_value = DEFAULT_BROKER)]
    broker: String,
    /// An attribute that must equal a value (`type=order.created`); repeatable.
    #[arg(long, value_parser = parse_pair)]
    filter: Vec<(String, String)>,
    /// An attribute that must start with a value (`type=com.shop.`); repeatable.
    #[arg(long, value_parser = parse_pair)]
    filter_prefix: Vec<(String, String)>,
    /// An attribute that must end with a value; repeatable.
    #[arg(long, value_parser = parse_pair)]
    filter_suffix: Vec<(String, String)>,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    delivery: DeliveryArgs,
    #[command(flatten)]
    ns: NamespaceArg,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not attribute=value"))
}

#[derive(Subcommand)]
pub enum SourceCommand {
    /// Turn NATS messages into CloudEvents for a service; with --stream, JetStream
    /// messages are acknowledged only once delivered.
    Nats(NatsArgs),
    /// Turn messages of a RabbitMQ queue into CloudEvents; each is acknowledged once
    /// delivered or dead-lettered, handed back otherwise.
    Rabbitmq(RabbitMqArgs),
    /// Read a Redis stream through a consumer group; entries are XACKed once delivered.
    Redis(RedisArgs),
    /// Subscribe to MQTT topic filters with QoS 1 and a persistent session.
    Mqtt(MqttArgs),
    /// A URL that takes a provider's signed POSTs (github, gitlab or standard
    /// webhooks) as CloudEvents; `updraft trigger show` prints it.
    Webhook(WebhookArgs),
    /// Updraft's own events (deployed, deleted, revision ready or failed, scaled,
    /// crashed, cold start, quota exceeded) for this namespace, to a broker or service.
    Platform(PlatformArgs),
}

#[derive(Args)]
pub struct PlatformArgs {
    name: String,
    /// An event type to send (all if none given); repeatable.
    #[arg(long = "type")]
    types: Vec<String>,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    delivery: DeliveryArgs,
    #[command(flatten)]
    ns: NamespaceArg,
}

#[derive(Args)]
pub struct WebhookArgs {
    name: String,
    #[arg(long, value_enum)]
    provider: WebhookProvider,
    /// The signing secret, as secret/key of the namespace's secrets.
    #[arg(long, value_parser = parse_signing_secret)]
    secret: SecretKeyRef,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    delivery: DeliveryArgs,
    #[command(flatten)]
    ns: NamespaceArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum WebhookProvider {
    Github,
    Gitlab,
    Standard,
}

fn parse_signing_secret(text: &str) -> Result<SecretKeyRef, String> {
    SecretKeyRef::parse("--secret", text).map_err(|e| e.to_string())
}

/// A password kept in a secret of the namespace (`secret/key`).
fn password(reference: Option<SecretKeyRef>) -> Option<PasswordRef> {
    reference.map(|secret_key_ref| PasswordRef { secret_key_ref })
}

fn parse_secret_ref(text: &str) -> Result<SecretKeyRef, String> {
    SecretKeyRef::parse("--password-secret", text).map_err(|e| e.to_string())
}

#[derive(Args)]
pub struct RabbitMqArgs {
    name: String,
    #[arg(long)]
    queue: String,
    /// amqp://user@host:port/vhost (the password from --password-secret).
    #[arg(long, default_value = DEFAULT_RABBITMQ_URL)]
    url: String,
    /// The password, as secret/key of the namespace's secrets.
    #[arg(long, value_parser = parse_secret_ref)]
    password_secret: Option<SecretKeyRef>,
    /// Declare the queue (durable) when it is missing.
    #[arg(long)]
    declare: bool,
    /// Bind the queue to this exchange.
    #[arg(long)]
    exchange: Option<String>,
    #[arg(long, requires = "exchange")]
    routing_key: Option<String>,
    /// Messages in delivery at once.
    #[arg(long, default_value_t = 10)]
    prefetch: u16,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    delivery: DeliveryArgs,
    #[command(flatten)]
    ns: NamespaceArg,
}

#[derive(Args)]
pub struct RedisArgs {
    name: String,
    #[arg(long)]
    stream: String,
    /// redis://host:port/db (the password from --password-secret).
    #[arg(long, default_value = DEFAULT_REDIS_URL)]
    address: String,
    #[arg(long, value_parser = parse_secret_ref)]
    password_secret: Option<SecretKeyRef>,
    /// The consumer group (default updraft-{namespace}-{name}).
    #[arg(long)]
    group: Option<String>,
    /// Entries in delivery at once.
    #[arg(long, default_value_t = 10)]
    count: usize,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    delivery: DeliveryArgs,
    #[command(flatten)]
    ns: NamespaceArg,
}

#[derive(Args)]
pub struct MqttArgs {
    name: String,
    /// A topic filter (+ and # wildcards); repeatable.
    #[arg(long = "topic", required = true)]
    topics: Vec<String>,
    #[arg(long, default_value = DEFAULT_MQTT_URL)]
    url: String,
    /// The persistent session's client id (default updraft-{namespace}-{name}).
    #[arg(long)]
    client_id: Option<String>,
    #[arg(long)]
    username: Option<String>,
    #[arg(long, value_parser = parse_secret_ref, requires = "username")]
    password_secret: Option<SecretKeyRef>,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    delivery: DeliveryArgs,
    #[command(flatten)]
    ns: NamespaceArg,
}

#[derive(Args)]
pub struct NatsArgs {
    name: String,
    /// The subject to read (wildcards allowed: orders.*).
    #[arg(long)]
    subject: String,
    #[arg(long, default_value = DEFAULT_NATS_URL)]
    url: String,
    /// A JetStream stream (created over the subject when missing).
    #[arg(long)]
    stream: Option<String>,
    /// The durable consumer's name (default updraft-{namespace}-{name}).
    #[arg(long, requires = "stream")]
    durable: Option<String>,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    delivery: DeliveryArgs,
    #[command(flatten)]
    ns: NamespaceArg,
}

#[derive(Subcommand)]
pub enum BrokerCommand {
    /// Create a broker or set its delivery spec (triggers' own specs win).
    Set {
        name: String,
        #[command(flatten)]
        delivery: DeliveryArgs,
        #[command(flatten)]
        ns: NamespaceArg,
    },
    /// Delete a broker that no trigger uses.
    Delete {
        name: String,
        #[command(flatten)]
        ns: NamespaceArg,
    },
}

#[derive(Subcommand)]
pub enum EventCommand {
    /// Send a CloudEvent to a broker (binary mode), as any producer would.
    Send(SendArgs),
}

#[derive(Args)]
pub struct SendArgs {
    #[arg(long, default_value = DEFAULT_BROKER)]
    broker: String,
    #[arg(long = "type")]
    ty: String,
    #[arg(long, default_value = "/updraft/cli")]
    source: String,
    /// The event id (default: a new UUID).
    #[arg(long)]
    id: Option<String>,
    #[arg(long)]
    subject: Option<String>,
    #[arg(long)]
    data: Option<String>,
    #[arg(long, default_value = "application/json")]
    content_type: String,
    /// An extension attribute (`region=eu`); repeatable.
    #[arg(long, value_parser = parse_pair)]
    ext: Vec<(String, String)>,
    #[command(flatten)]
    ns: NamespaceArg,
}

async fn put_trigger(
    client: &ApiClient,
    ns: &NamespaceArg,
    name: &str,
    spec: TriggerSpec,
    output: Output,
) -> Result<u8, CliError> {
    let applied = client.put_trigger(&ns.namespace, name, &spec).await?;
    if !print_structured(&applied, output) {
        println!("{}/{} {}", applied.kind, applied.name, applied.result);
    }
    Ok(0)
}

pub async fn trigger(command: TriggerCommand, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    match command {
        TriggerCommand::Cron(a) => {
            let spec = TriggerSpec::Cron(CronSpec {
                schedule: a.schedule,
                timezone: a.timezone,
                data: a.data,
                data_base64: a.data_base64,
                content_type: a.content_type,
                sink: a.target.destination(),
                catch_up: a.catch_up,
                delivery: a.delivery.spec(),
            });
            put_trigger(client, &a.ns, &a.name, spec, output).await
        }
        TriggerCommand::Event(a) => {
            let dialect = |pairs: &[(String, String)], make: fn(BTreeMap<String, String>) -> Filter| {
                pairs
                    .iter()
                    .map(|(k, v)| make(BTreeMap::from([(k.clone(), v.clone())])))
                    .collect::<Vec<_>>()
            };
            let mut filters = Vec::new();
            if !a.filter_prefix.is_empty() || !a.filter_suffix.is_empty() {
                filters.extend(dialect(&a.filter, |m| Filter {
                    exact: Some(m),
                    ..Default::default()
                }));
                filters.extend(dialect(&a.filter_prefix, |m| Filter {
                    prefix: Some(m),
                    ..Default::default()
                }));
                filters.extend(dialect(&a.filter_suffix, |m| Filter {
                    suffix: Some(m),
                    ..Default::default()
                }));
            }
            let spec = TriggerSpec::Event(EventSpec {
                broker: a.broker,
                filter: if filters.is_empty() {
                    a.filter.into_iter().collect()
                } else {
                    BTreeMap::new()
                },
                filters,
                subscriber: a.target.destination(),
                delivery: a.delivery.spec(),
            });
            put_trigger(client, &a.ns, &a.name, spec, output).await
        }
        TriggerCommand::Show { name, ns, limit } => {
            let detail = client.trigger(&ns.namespace, &name, limit).await?;
            if !print_structured(&detail, output) {
                print_detail(&detail);
            }
            Ok(0)
        }
        TriggerCommand::Delete { name, ns } => {
            client.delete_trigger(&ns.namespace, &name).await?;
            Ok(deleted("trigger", &ns, &name, output))
        }
    }
}

pub async fn source(command: SourceCommand, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    match command {
        SourceCommand::Nats(a) => {
            let spec = TriggerSpec::Nats(NatsSpec {
                url: a.url,
                subject: a.subject,
                stream: a.stream,
                durable: a.durable,
                sink: a.target.destination(),
                delivery: a.delivery.spec(),
            });
            put_trigger(client, &a.ns, &a.name, spec, output).await
        }
        SourceCommand::Rabbitmq(a) => {
            let spec = TriggerSpec::RabbitMq(RabbitMqSpec {
                url: a.url,
                password: password(a.password_secret),
                queue: a.queue,
                declare: a.declare,
                exchange: a.exchange,
                routing_key: a.routing_key,
                prefetch: a.prefetch,
                sink: a.target.destination(),
                delivery: a.delivery.spec(),
            });
            put_trigger(client, &a.ns, &a.name, spec, output).await
        }
        SourceCommand::Redis(a) => {
            let spec = TriggerSpec::RedisStream(RedisStreamSpec {
                address: a.address,
                password: password(a.password_secret),
                stream: a.stream,
                group: a.group,
                count: a.count,
                sink: a.target.destination(),
                delivery: a.delivery.spec(),
            });
            put_trigger(client, &a.ns, &a.name, spec, output).await
        }
        SourceCommand::Webhook(a) => {
            let spec = TriggerSpec::Webhook(WebhookSpec {
                provider: match a.provider {
                    WebhookProvider::Github => Provider::Github,
                    WebhookProvider::Gitlab => Provider::Gitlab,
                    WebhookProvider::Standard => Provider::Standard,
                },
                secret: a.secret,
                sink: a.target.destination(),
                delivery: a.delivery.spec(),
            });
            put_trigger(client, &a.ns, &a.name, spec, output).await
        }
        SourceCommand::Platform(a) => {
            let spec = TriggerSpec::Platform(PlatformSpec {
                types: a.types,
                sink: a.target.destination(),
                delivery: a.delivery.spec(),
            });
            put_trigger(client, &a.ns, &a.name, spec, output).await
        }
        SourceCommand::Mqtt(a) => {
            let spec = TriggerSpec::Mqtt(MqttSpec {
                url: a.url,
                topics: a.topics,
                client_id: a.client_id,
                username: a.username,
                password: password(a.password_secret),
                sink: a.target.destination(),
                delivery: a.delivery.spec(),
            });
            put_trigger(client, &a.ns, &a.name, spec, output).await
        }
    }
}

pub async fn list(scope: &ListScope, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    let triggers = scope.list(client, async |ns| client.triggers(ns).await).await?;
    if !print_structured(&triggers, output) {
        print_listing(
            scope.all_namespaces,
            &[
                "NAME",
                "KIND",
                "SOURCE",
                "TARGET",
                "NEXT",
                "DELIVERED/PENDING/DEAD/FAILED",
            ],
            triggers.iter().map(|t| {
                let count = |s: &str| t.deliveries.get(s).copied().unwrap_or(0);
                let row = vec![
                    t.name.clone(),
                    t.kind.to_string(),
                    t.source.clone(),
                    t.target.clone(),
                    t.next_fire.clone().unwrap_or_else(|| "-".into()),
                    format!(
                        "{}/{}/{}/{}",
                        count("delivered"),
                        count("pending"),
                        count("dead-lettered"),
                        count("failed")
                    ),
                ];
                (t.namespace.clone(), row)
            }),
        );
    }
    Ok(0)
}

fn print_detail(d: &TriggerDetailView) {
    let t = &d.trigger;
    println!("Trigger:  {} ({}, namespace {})", t.name, t.kind, t.namespace);
    println!("Source:   {}", t.source);
    println!("Target:   {}", t.target);
    if let Some(next) = &t.next_fire {
        println!("Next:     {next}");
    }
    if let Some(last) = &t.last_fired {
        println!("Last:     {last}");
    }
    println!("History:");
    println!(
        "  {:<26} {:<14} {:>8} {:<38} {:<12} ERROR",
        "WHEN", "STATUS", "ATTEMPTS", "EVENT", "AFTER"
    );
    for h in &d.history {
        let status = if h.dead_letter {
            format!("{} (dlq)", h.status)
        } else {
            h.status.clone()
        };
        let after = h
            .delivered_after_ms
            .map(|ms| format!("{ms:.1} ms"))
            .unwrap_or_else(|| "-".to_string());
        println!(
            "  {:<26} {:<14} {:>8} {:<38} {:<12} {}",
            h.scheduled.as_deref().unwrap_or(&h.created_at),
            status,
            h.attempts,
            h.event_id,
            after,
            h.last_error.as_deref().unwrap_or("")
        );
    }
}

pub async fn brokers(scope: &ListScope, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    let brokers = scope.list(client, async |ns| client.brokers(ns).await).await?;
    if !print_structured(&brokers, output) {
        print_listing(
            scope.all_namespaces,
            &["NAME", "URL"],
            brokers
                .iter()
                .map(|b| (b.namespace.clone(), vec![b.name.clone(), b.url.clone()])),
        );
    }
    Ok(0)
}

pub async fn broker(command: BrokerCommand, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    match command {
        BrokerCommand::Set { name, delivery, ns } => {
            let body = BrokerRequest {
                delivery: delivery.spec(),
            };
            let applied = client.put_broker(&ns.namespace, &name, &body).await?;
            if !print_structured(&applied, output) {
                println!("broker/{} {}", applied.name, applied.result);
            }
            Ok(0)
        }
        BrokerCommand::Delete { name, ns } => {
            client.delete_broker(&ns.namespace, &name).await?;
            Ok(deleted("broker", &ns, &name, output))
        }
    }
}

/// Says that a trigger, broker or domain mapping is gone.
pub(crate) fn deleted(kind: &str, ns: &NamespaceArg, name: &str, output: Output) -> u8 {
    if !print_structured(
        &serde_json::json!({ "deleted": name, "namespace": ns.namespace }),
        output,
    ) {
        println!("{kind}/{name} deleted");
    }
    0
}

pub async fn event(command: EventCommand, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    let EventCommand::Send(a) = command;
    let mut headers = vec![
        ("ce-specversion".to_string(), "1.0".to_string()),
        (
            "ce-id".to_string(),
            a.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        ),
        ("ce-type".to_string(), a.ty),
        ("ce-source".to_string(), a.source),
        ("content-type".to_string(), a.content_type),
    ];
    if let Some(subject) = a.subject {
        headers.push(("ce-subject".to_string(), subject));
    }
    for (k, v) in a.ext {
        headers.push((format!("ce-{k}"), v));
    }
    let reply = client
        .publish(&a.ns.namespace, &a.broker, &headers, full(a.data.unwrap_or_default()))
        .await?;
    let accepted: AcceptedView = decode(reply)?;
    if !print_structured(&accepted, output) {
        println!(
            "accepted {} event(s); {} delivery(ies) queued",
            accepted.accepted, accepted.deliveries
        );
    }
    Ok(0)
}
