//! The REST API's contract: the JSON the server answers with and the CLI reads.
//!
//! The server builds these from its state and the CLI prints them, so a change to a
//! field is a change here, seen by both. Requests are `updraft_model` types
//! (`DeploySpec`, traffic tables, namespace limits); answers are the views below.

pub mod views;
