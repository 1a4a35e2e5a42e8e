//! Webhook sources: a URL per source that takes a provider's POSTs, checks their
//! signature with a secret of the namespace, and turns each into a CloudEvent.
//!
//! - `github`: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`, the
//!   delivery id in `X-GitHub-Delivery`, the event in `X-GitHub-Event`.
//! - `gitlab`: the secret itself in `X-Gitlab-Token`, the delivery id in
//!   `X-Gitlab-Event-UUID` (or `Idempotency-Key`), the event in `X-Gitlab-Event`.
//! - `standard` (Standard Webhooks, as Svix and others send them): `webhook-id`,
//!   `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
//!   "{id}.{timestamp}.{body}">`; a timestamp more than five minutes off is refused.
//!
//! The delivery id becomes the event's id, and a delivery id seen before is refused
//! (the store keeps them), so a captured request cannot be played again.

use base64::Engine;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use updraft_model::secret::SecretKeyRef;
use updraft_model::FieldError;

use crate::delivery::{DeliverySpec, Destination};

/// Largest body a webhook takes.
pub const MAX_WEBHOOK_BODY: usize = 1024 * 1024;
/// How far a signed timestamp may be from now, either way.
pub const MAX_SKEW_S: i64 = 300;
const MAX_ID: usize = 256;
const MAX_EVENT_NAME: usize = 128;
/// The type of a standard webhook whose body names none.
pub const WEBHOOK_EVENT_TYPE: &str = "dev.updraft.sources.webhook";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
    Gitlab,
    Standard,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
            Provider::Standard => "standard",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookSpec {
    pub provider: Provider,
    /// The signing secret: one key of a secret of the namespace.
    pub secret: SecretKeyRef,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

impl WebhookSpec {
    pub fn validate(&self, at: impl Fn(&str) -> String) -> Result<(), FieldError> {
        self.secret.validate(&at("secret"))
    }
}

/// What a verified request says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub id: String,
    pub ty: String,
}

/// Why a request is refused; each is a 401 but a replay, which the store finds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request is not signed: {0} is missing")]
    Unsigned(&'static str),
    #[error("the signature does not match")]
    BadSignature,
    #[error("the signed timestamp is {0} s from now; at most {MAX_SKEW_S} s allowed")]
    Stale(i64),
    #[error("{0} is missing or not a short printable value")]
    BadHeader(&'static str),
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A short printable header value (ids, event names), or the refusal naming it.
fn printable<'a>(headers: &'a HeaderMap, name: &'static str, max: usize) -> Result<&'a str, Refusal> {
    header(headers, name)
        .filter(|v| !v.is_empty() && v.len() <= max && v.chars().all(|c| c.is_ascii_graphic() || c == ' '))
        .ok_or(Refusal::BadHeader(name))
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length")
}

/// A provider's event name as a CloudEvents type segment: `Push Hook` → `push_hook`.
fn type_segment(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Checks a request's signature and freshness; `now_s` is seconds since the epoch.
pub fn verify(
    provider: Provider,
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now_s: i64,
) -> Result<Verified, Refusal> {
    match provider {
        Provider::Github => {
            let signature = header(headers, "x-hub-signature-256").ok_or(Refusal::Unsigned("X-Hub-Signature-256"))?;
            let given = signature
                .strip_prefix("sha256=")
                .and_then(|h| hex::decode(h).ok())
                .ok_or(Refusal::BadSignature)?;
            let mut mac = mac(secret);
            mac.update(body);
            mac.verify_slice(&given).map_err(|_| Refusal::BadSignature)?;
            let id = printable(headers, "x-github-delivery", MAX_ID)?;
            let event = printable(headers, "x-github-event", MAX_EVENT_NAME)?;
            Ok(Verified {
                id: id.to_string(),
                ty: format!("dev.knative.source.github.{}", type_segment(event)),
            })
        }
        Provider::Gitlab => {
            let token = header(headers, "x-gitlab-token").ok_or(Refusal::Unsigned("X-Gitlab-Token"))?;
            // Comparing MACs of both keeps the comparison's time from telling the token.
            let mut expected = mac(b"gitlab-token");
            expected.update(secret);
            let mut given = mac(b"gitlab-token");
            given.update(token.as_bytes());
            expected
                .verify_slice(&given.finalize().into_bytes())
                .map_err(|_| Refusal::BadSignature)?;
            let id = printable(headers, "x-gitlab-event-uuid", MAX_ID)
                .or_else(|_| printable(headers, "idempotency-key", MAX_ID))
                .map_err(|_| Refusal::BadHeader("X-Gitlab-Event-UUID"))?;
            let event = printable(headers, "x-gitlab-event", MAX_EVENT_NAME)?;
            Ok(Verified {
                id: id.to_string(),
                ty: format!("dev.knative.source.gitlab.{}", type_segment(event)),
            })
        }
        Provider::Standard => {
            let signatures = header(headers, "webhook-signature").ok_or(Refusal::Unsigned("webhook-signature"))?;
            let id = printable(headers, "webhook-id", MAX_ID)?;
            let timestamp: i64 = header(headers, "webhook-timestamp")
                .and_then(|t| t.parse().ok())
                .ok_or(Refusal::BadHeader("webhook-timestamp"))?;
            let key = match secret.strip_prefix(b"whsec_") {
                Some(encoded) => base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|_| Refusal::BadSignature)?,
                None => secret.to_vec(),
            };
            let mut mac = mac(&key);
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body);
            let matched = signatures
                .split(' ')
                .filter_map(|s| s.strip_prefix("v1,"))
                .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .any(|given| mac.clone().verify_slice(&given).is_ok());
            if !matched {
                return Err(Refusal::BadSignature);
            }
            // Checked after the signature, so an unsigned caller learns nothing of it.
            let skew = now_s - timestamp;
            if skew.abs() > MAX_SKEW_S {
                return Err(Refusal::Stale(skew));
            }
            let ty = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(type_segment))
                .filter(|t| !t.is_empty() && t.len() <= MAX_EVENT_NAME)
                .unwrap_or_else(|| WEBHOOK_EVENT_TYPE.to_string());
            Ok(Verified { id: id.to_string(), ty })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn hmac_hex(key: &[u8], data: &[u8]) -> String {
        let mut m = mac(key);
        m.update(data);
        hex::encode(m.finalize().into_bytes())
    }

    #[test]
    fn github_signatures_are_checked_over_the_body() {
        let body = br#"{"ref":"main"}"#;
        let good = headers(&[
            ("x-hub-signature-256", format!("sha256={}", hmac_hex(b"s3cret", body))),
            ("x-github-delivery", "d-1".into()),
            ("x-github-event", "push".into()),
        ]);
        assert_eq!(
            verify(Provider::Github, b"s3cret", &good, body, 0),
            Ok(Verified {
                id: "d-1".into(),
                ty: "dev.knative.source.github.push".into()
            })
        );
        assert_eq!(
            verify(Provider::Github, b"other", &good, body, 0),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            verify(Provider::Github, b"s3cret", &good, b"{}", 0),
            Err(Refusal::BadSignature)
        );
        let unsigned = headers(&[("x-github-delivery", "d-1".into())]);
        assert_eq!(
            verify(Provider::Github, b"s3cret", &unsigned, body, 0),
            Err(Refusal::Unsigned("X-Hub-Signature-256"))
        );
    }

    #[test]
    fn gitlab_tokens_must_match_and_name_the_event() {
        let good = headers(&[
            ("x-gitlab-token", "tok".into()),
            ("x-gitlab-event-uuid", "u-1".into()),
            ("x-gitlab-event", "Push Hook".into()),
        ]);
        assert_eq!(
            verify(Provider::Gitlab, b"tok", &good, b"{}", 0).unwrap().ty,
            "dev.knative.source.gitlab.push_hook"
        );
        assert_eq!(
            verify(Provider::Gitlab, b"tok2", &good, b"{}", 0),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn standard_webhooks_are_signed_with_their_id_and_time_and_expire() {
        let key = b"0123456789abcdef";
        let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
        let body = br#"{"type":"invoice.paid"}"#;
        let signed = |ts: i64| {
            let mut m = mac(key);
            m.update(format!("msg_1.{ts}.").as_bytes());
            m.update(body);
            let sig = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
            headers(&[
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", format!("v1,bm90IGl0 v1,{sig}")),
            ])
        };
        let now = 1_800_000_000;
        assert_eq!(
            verify(Provider::Standard, secret.as_bytes(), &signed(now - 10), body, now),
            Ok(Verified {
                id: "msg_1".into(),
                ty: "invoice.paid".into()
            })
        );
        assert_eq!(
            verify(Provider::Standard, secret.as_bytes(), &signed(now - 600), body, now),
            Err(Refusal::Stale(600))
        );
        let mut tampered = signed(now);
        tampered.insert("webhook-timestamp", (now - 1).to_string().parse().unwrap());
        assert_eq!(
            verify(Provider::Standard, secret.as_bytes(), &tampered, body, now),
            Err(Refusal::BadSignature)
        );
    }
}
