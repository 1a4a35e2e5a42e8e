//! The REST API's contract: the JSON the server answers with and the CLI reads.
//!
//! The server builds these from its state and the CLI prints them, so a change to a
//! field is a change here, seen by both. Requests are `updraft_model` and
//! `updraft_events` specs (`DeploySpec`, `TriggerSpec`, namespace limits) or the
//! bodies in [`requests`]; answers are the [`views`]. All of them derive their
//! OpenAPI schemas, from which the server serves `GET /v1/openapi.json`.

#[cfg(feature = "client")]
pub mod client;
pub mod requests;
pub mod schema;
pub mod views;
