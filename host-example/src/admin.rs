//! The operator's routes: `/healthz`, `/readyz` and `/metrics`. Served on the
//! `[admin]` listener when one is configured (and then not on the public one), with
//! `POST /reload` there too: never on the public listener.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::json;

use crate::state::AppState;

/// The operator's routes, to merge into a router with the host's state.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
}

/// The operator's routes alone, and `POST /reload`, for the `[admin]` listener.
pub fn app(state: Arc<AppState>) -> Router {
    routes().route("/reload", post(reload)).with_state(state)
}

/// Reloads the config and the plugins folder: 200 with what changed, or 422 with
/// why the config was refused (the running one stays).
async fn reload(State(state): State<Arc<AppState>>) -> Response {
    match state.roster.reload().await {
        Ok(changes) => (StatusCode::OK, Json(json!(changes))).into_response(),
        Err(err) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": err.to_string(),
                "generation": state.roster.current().generation,
            })),
        )
            .into_response(),
    }
}

/// 200 when the host can take webhooks now: every enabled channel is up and the
/// queue has room; otherwise 503 with the reasons (fixed phrases: no setting, no
/// panic text).
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let mut reasons = Vec::new();
    let lineup = state.roster.current();
    let mut names: Vec<_> = lineup.channels.keys().collect();
    names.sort();
    for name in names {
        if let Some(outage) = lineup.channels[name].outage() {
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
    let lineup = state.roster.current();
    let mut channels: Vec<_> = lineup
        .channels
        .values()
        .map(|c| {
            let plugin = c.plugin();
            let (name, plugin) = (&c.name, plugin.id.as_str());
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
    let plugins: Vec<_> = lineup
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
        "generation": lineup.generation,
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
