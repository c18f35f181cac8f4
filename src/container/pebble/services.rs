//! Services over Pebble: `POST /v1/services` (start, stop, restart) waiting for the
//! change, and `GET /v1/services` for the state (`backoff` counts as running).

use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};

use super::client::{Client, REQUEST_TIMEOUT, query_value};
use crate::error::ContainerError;

/// How long a service change may take (Pebble's own stop timeouts are shorter).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(300);

fn service_error(services: &[String], message: impl Into<String>) -> ContainerError {
    ContainerError::Service {
        service: services.join(","),
        message: message.into(),
    }
}

/// Runs `action` on `services` and waits for Pebble's change to finish.
pub(crate) async fn act(
    client: &Client,
    action: &str,
    services: &[String],
) -> Result<(), ContainerError> {
    if services.is_empty() {
        return Ok(());
    }
    for name in services {
        if name.is_empty() || name.contains('\0') {
            return Err(service_error(services, "invalid service name"));
        }
    }
    let body = json!({"action": action, "services": services});
    let answer = client
        .json(Method::POST, "/v1/services", Some(&body), REQUEST_TIMEOUT)
        .await
        .map_err(|e| service_error(services, format!("{action} failed: {e}")))?;
    if answer.is_error() {
        return Err(service_error(
            services,
            format!(
                "pebble refused to {action} ({}): {}",
                answer.status,
                answer.message()
            ),
        ));
    }
    let Some(change) = answer.change else {
        // Nothing to do (e.g. already in the asked state).
        return Ok(());
    };
    let outcome = tokio::time::timeout(CHANGE_TIMEOUT, client.wait_change(&change))
        .await
        .map_err(|_| {
            service_error(
                services,
                format!("{action}: pebble change {change} not done within {CHANGE_TIMEOUT:?}"),
            )
        })?
        .map_err(|e| service_error(services, format!("{action}: {e}")))?;
    if outcome.status != "Done" {
        return Err(service_error(
            services,
            format!(
                "{action}: pebble change {change} ended {}: {}",
                outcome.status,
                outcome.err.unwrap_or_else(|| "no error given".into())
            ),
        ));
    }
    Ok(())
}

/// Whether `service` is running: `active`, or `backoff` (Pebble restarts it by itself).
pub(crate) async fn is_running(client: &Client, service: &str) -> Result<bool, ContainerError> {
    let services = [service.to_string()];
    if service.is_empty() || service.contains('\0') || service.contains(',') {
        return Err(service_error(&services, "invalid service name"));
    }
    let answer = client
        .json(
            Method::GET,
            &format!("/v1/services?names={}", query_value(service)),
            None,
            REQUEST_TIMEOUT,
        )
        .await
        .map_err(|e| service_error(&services, format!("status failed: {e}")))?;
    if answer.is_error() {
        return Err(service_error(
            &services,
            format!(
                "pebble refused the status ({}): {}",
                answer.status,
                answer.message()
            ),
        ));
    }
    let entry = answer
        .result
        .as_array()
        .and_then(|list| {
            list.iter()
                .find(|s| s.get("name").and_then(Value::as_str) == Some(service))
        })
        .ok_or_else(|| service_error(&services, "unknown service (not in Pebble's plan)"))?;
    Ok(matches!(
        entry.get("current").and_then(Value::as_str),
        Some("active" | "backoff")
    ))
}
