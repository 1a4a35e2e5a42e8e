//! A deploy's steps as the server reports them: a spinner on a terminal, one line per
//! step otherwise, JSON lines with `-o json`. All of it goes to stderr, so stdout keeps
//! the result (the service) a script reads.

use std::io::IsTerminal;
use std::time::Duration;

use http::StatusCode;
use indicatif::ProgressBar;
use updraft_api::views::{DeployEventView, ServiceView};

use crate::client::{read_json_lines, CliError};
use crate::Output;

/// Shows the steps of a watched deploy until its outcome: the service, or its error.
/// `verbose` shows the build's own output too.
pub async fn follow_deploy(
    body: hyper::body::Incoming,
    output: Output,
    verbose: bool,
) -> Result<ServiceView, CliError> {
    let spinner = (output == Output::Table && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    let ended = read_json_lines(body, "the deploy's progress", |event: DeployEventView, line| {
        if output != Output::Table {
            eprintln!("{}", String::from_utf8_lossy(line).trim_end());
        }
        match event.phase.as_str() {
            "done" | "failed" => return Ok(Some(event)),
            _ if output != Output::Table => {}
            "output" if !verbose => {}
            phase => {
                let text = format!("{phase}: {}", event.detail.as_deref().unwrap_or(""));
                match &spinner {
                    Some(bar) if phase == "output" => bar.println(text),
                    Some(bar) => bar.set_message(text),
                    None => eprintln!("{text}"),
                }
            }
        }
        Ok(None)
    })
    .await;
    if let Some(bar) = &spinner {
        bar.finish_and_clear();
    }
    match ended? {
        Some(event) => outcome(event),
        None => Err(CliError::failed(
            "the deploy's progress ended before its outcome; `updraft service NAME` shows where it is",
        )),
    }
}

fn outcome(event: DeployEventView) -> Result<ServiceView, CliError> {
    match (event.service, event.error) {
        (Some(service), _) => Ok(*service),
        (None, Some(error)) => Err(updraft_api::client::Error::Api {
            status: StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: error.message,
            field: error.field,
        }
        .into()),
        (None, None) => Err(CliError::failed("the deploy ended with neither a service nor an error")),
    }
}
