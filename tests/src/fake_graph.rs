//! A fake Graph API on 127.0.0.1 that records every call and answers like the Send API.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{Method, StatusCode, Uri},
    response::IntoResponse,
    Json, Router,
};
use serde_json::{json, Value};

/// One request the fake Graph API received.
#[derive(Debug, Clone)]
pub struct GraphCall {
    /// HTTP method.
    pub method: String,
    /// Path, e.g. `/v25.0/me/messages`.
    pub path: String,
    /// Decoded query parameters.
    pub query: HashMap<String, String>,
    /// The JSON body (`Null` when there was none).
    pub body: Value,
}

impl GraphCall {
    /// `recipient.id`.
    pub fn recipient(&self) -> &str {
        self.body["recipient"]["id"].as_str().unwrap_or("")
    }

    /// `message.text`.
    pub fn text(&self) -> Option<&str> {
        self.body["message"]["text"].as_str()
    }
}

#[derive(Default)]
struct Shared {
    calls: Mutex<Vec<GraphCall>>,
    delay_ms: AtomicU64,
    next_id: AtomicU64,
}

/// The fake server. Stops when dropped.
pub struct FakeGraph {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeGraph {
    /// Starts a fake Graph API on a free loopback port.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, shared, task }
    }

    /// Makes every answer wait `delay` first.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<GraphCall> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// Waits until at least `n` calls arrived (at most 10 s), then a further `settle`
    /// so that extra, unexpected calls show up too; returns all calls.
    pub async fn wait_for(&self, n: usize, settle: Duration) -> Vec<GraphCall> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.calls().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(settle).await;
        self.calls()
    }
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> impl IntoResponse {
    let query = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let call = GraphCall {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query,
        body,
    };
    let recipient = call.recipient().to_owned();
    shared.calls.lock().unwrap().push(call);
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::OK,
        Json(json!({ "recipient_id": recipient, "message_id": format!("m_fake_{id}") })),
    )
}
