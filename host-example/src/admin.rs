//! The operator's routes: `/healthz`, `/readyz` and `/metrics`. Served on the
//! `[admin]` listener when one is configured (and then not on the public one).

use std::{sync::Arc, time::Instant};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::json;

use crate::server::AppState;

/// The operator's routes, to merge into a router with the host's state.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
}

/// The operator's routes alone, for the `[admin]` listener.
pub fn app(state: Arc<AppState>) -> Router {
    routes().with_state(state)
}

/// 200 when the host can take webhooks now: every enabled channel is up and the
/// queue has room; otherwise 503 with the reasons (fixed phrases: no setting, no
/// panic text).
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let mut reasons = Vec::new();
    let mut names: Vec<_> = state.channels.keys().collect();
    names.sort();
    for name in names {
        if let Some(outage) = state.channels[name].outage() {
            reasons.push(format!("channel {name} is down: {}", outage.reason));
        }
    }
    if state.dispatcher.depth() >= state.queue_capacity {
        reasons.push("the queue is full".to_owned());
    }
    if reasons.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reasons": reasons })),
        )
            .into_response()
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let mut channels: Vec<_> = state
        .channels
        .values()
        .map(|c| {
            let (name, plugin) = (&c.name, c.plugin.id.as_str());
            match c.outage() {
                None => json!({ "name": name, "plugin": plugin, "status": "up" }),
                // No panic text or setting here: only the channel's fixed phrase.
                Some(outage) => json!({
                    "name": name,
                    "plugin": plugin,
                    "status": "down",
                    "reason": outage.reason,
                    "retry_in_ms": u64::try_from(
                        outage
                            .retry_at
                            .saturating_duration_since(Instant::now())
                            .as_millis()
                    )
                    .unwrap_or(u64::MAX),
                }),
            }
        })
        .collect();
    let degraded = channels.iter().any(|c| c["status"] == "down");
    channels.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let plugins: Vec<_> = state
        .plugins
        .iter()
        .map(|p| {
            json!({
                "id": p.id.as_str(),
                "name": p.name.as_str(),
                "version": p.version.as_str(),
                "api_version": p.api_version.as_str(),
            })
        })
        .collect();
    Json(json!({
        "status": if degraded { "degraded" } else { "ok" },
        "plugins": plugins,
        "channels": channels,
        "queue_depth": state.dispatcher.depth(),
        "queue": state.queue.status(),
    }))
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
