//! The webhook route, and the host's routes as a whole.

use std::{sync::Arc, time::Instant};

use adapter_api::{ErrorKind, Header, Verdict, WebhookRequest};
use axum::{
    body::{Body, Bytes, HttpBody},
    extract::{Path, State},
    http::{header, HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use crate::{channels::Channel, dispatch::EnqueueError, state::AppState};

/// The routes of the public listener: the webhooks, and the operator's routes too
/// when there is no `[admin]` listener.
pub fn app(state: Arc<AppState>, with_admin: bool) -> Router {
    let router = Router::new().route("/webhooks/{name}", get(webhook).post(webhook));
    let router = if with_admin {
        router.merge(crate::admin::routes())
    } else {
        router
    };
    router.with_state(state)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

async fn webhook(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let Some(channel) = state.roster.channel(&name) else {
        return text(StatusCode::NOT_FOUND, "no such channel");
    };
    let (outcome, response) = handle(&state, &channel, method, uri, headers, body).await;
    channel.metrics.webhook(outcome);
    channel
        .metrics
        .ack_seconds
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Verifies, parses and queues one webhook; returns the outcome's metric name too.
async fn handle(
    state: &AppState,
    channel: &Arc<Channel>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> (&'static str, Response) {
    let name = channel.name.as_str();
    let Some(adapter) = channel.adapter() else {
        return (
            "channel_failed",
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "channel unavailable, retry later",
            ),
        );
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > state.max_body_bytes) {
        return ("too_large", too_large(name, state.max_body_bytes));
    }
    // The body's length as HTTP framing gives it (Content-Length, or none for a
    // GET); a chunked body may be as large as the limit.
    let size = body
        .size_hint()
        .exact()
        .and_then(|n| usize::try_from(n).ok());
    let Some(_reserved) = state.bodies.try_reserve(
        size.unwrap_or(state.max_body_bytes)
            .min(state.max_body_bytes),
    ) else {
        tracing::debug!(
            channel = name,
            "webhook refused: too many bodies being read at once"
        );
        return (
            "overloaded",
            text(StatusCode::SERVICE_UNAVAILABLE, "busy, retry later"),
        );
    };
    let read = axum::body::to_bytes(body, state.max_body_bytes);
    let body: Bytes = match tokio::time::timeout(state.body_timeout, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(err)) if is_length_limit(&err) => {
            return ("too_large", too_large(name, state.max_body_bytes))
        }
        Ok(Err(err)) => {
            tracing::debug!(channel = name, "could not read the body: {err}");
            return (
                "bad_request",
                text(StatusCode::BAD_REQUEST, "could not read the request body"),
            );
        }
        Err(_) => {
            tracing::info!(channel = name, "webhook body not received in time");
            return (
                "timeout",
                text(
                    StatusCode::REQUEST_TIMEOUT,
                    "the body took too long to arrive",
                ),
            );
        }
    };

    let header_list: Vec<Header<'_>> = headers
        .iter()
        .filter_map(|(name, value)| {
            Some(Header {
                name: name.as_str().into(),
                value: value.to_str().ok()?.into(),
            })
        })
        .collect();
    let request = WebhookRequest {
        method: method.as_str().into(),
        path: uri.path().into(),
        query: uri.query().unwrap_or("").into(),
        headers: header_list.as_slice().into(),
        body: body.as_ref().into(),
    };

    match adapter.verify(&request) {
        Verdict::Respond(response) => {
            let outcome = match response.status {
                200..=299 => "answered",
                401 | 403 => "unauthorized",
                405 => "method_not_allowed",
                500..=599 => "plugin_error",
                _ => "refused",
            };
            if response.status == 500 {
                // What adapter-kit answers when verify panics.
                channel.plugin_failed(&adapter, "verify failed");
            } else if response.status >= 400 {
                tracing::info!(channel = name, status = response.status, "webhook refused");
            }
            let status =
                StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let response = (
                status,
                [(header::CONTENT_TYPE, response.content_type.to_string())],
                response.body.into_vec(),
            )
                .into_response();
            return (outcome, response);
        }
        Verdict::Accept => {}
    }

    let events = match adapter.parse(&request) {
        Ok(events) => events,
        Err(err) if err.kind == ErrorKind::BAD_REQUEST => {
            tracing::info!(channel = name, "webhook body refused: {}", err.message);
            return (
                "bad_request",
                text(StatusCode::BAD_REQUEST, err.message.to_string()),
            );
        }
        Err(err) => {
            tracing::error!(channel = name, kind = %err.kind, "parse failed: {}", err.message);
            if err.kind == ErrorKind::PANICKED {
                channel.plugin_failed(&adapter, "parse panicked");
            }
            return (
                "plugin_error",
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the channel adapter failed",
                ),
            );
        }
    };
    let count = events.len();
    match state.dispatcher.enqueue(channel, events).await {
        Ok(accepted) => {
            tracing::debug!(
                channel = name,
                new = accepted.new,
                duplicates = accepted.duplicates,
                "webhook accepted"
            );
            ("accepted", text(StatusCode::OK, "EVENT_RECEIVED"))
        }
        Err(err @ (EnqueueError::Full | EnqueueError::Closed)) => {
            tracing::warn!(channel = name, events = count, "webhook refused: {err}");
            (
                "unavailable",
                text(StatusCode::SERVICE_UNAVAILABLE, "busy, retry later"),
            )
        }
        Err(err) => {
            tracing::error!(channel = name, events = count, "webhook not stored: {err}");
            (
                "store_error",
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot store events, retry later",
                ),
            )
        }
    }
}

fn too_large(channel: &str, limit: usize) -> Response {
    tracing::info!(channel, limit, "webhook body over the size limit");
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body larger than {limit} bytes"),
    )
}

fn is_length_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}
