//! A sandbox Graph API on loopback: records every call and answers like the Send API
//! (and like the LINE Messaging API's reply and push endpoints).
//! `demo` uses it so nobody needs a Facebook account to try the host; the tests use
//! it as their fake Graph server, with scripted failures.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Json, Router,
};
use serde_json::{json, Value};

/// One request the sandbox received.
#[derive(Debug, Clone)]
pub struct GraphCall {
    /// HTTP method.
    pub method: String,
    /// Path, e.g. `/v25.0/me/messages`.
    pub path: String,
    /// Decoded query parameters.
    pub query: HashMap<String, String>,
    /// The JSON body (`Null` when there was none or it was not JSON).
    pub body: Value,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The body as text (lossy), for non-JSON bodies such as multipart uploads.
    pub raw_body: String,
    /// Request headers, names lower-case.
    pub headers: HashMap<String, String>,
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

/// A scripted answer, used once, instead of the default success.
#[derive(Debug, Clone)]
pub struct Scripted {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// Extra headers (e.g. `x-business-use-case-usage`).
    pub headers: Vec<(String, String)>,
}

impl Scripted {
    /// A Graph error answer: `{"error": {code, error_subcode, message, fbtrace_id}}`.
    pub fn graph_error(status: u16, code: i64, subcode: i64, message: &str) -> Self {
        Self {
            status,
            body: json!({ "error": {
                "message": message,
                "type": "OAuthException",
                "code": code,
                "error_subcode": subcode,
                "fbtrace_id": "SandboxTrace",
            }}),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

#[derive(Default)]
struct Shared {
    calls: Mutex<Vec<GraphCall>>,
    script: Mutex<VecDeque<Scripted>>,
    delay_ms: AtomicU64,
    next_id: AtomicU64,
}

/// The sandbox server. Stops when dropped.
pub struct SandboxGraph {
    /// `http://127.0.0.1:PORT`: the `graph_api_base` to configure.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl SandboxGraph {
    /// Starts a sandbox Graph API on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("a valid address")).await
    }

    /// Starts a sandbox Graph API on `addr`.
    pub async fn start_on(addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Ok(Self { url, shared, task })
    }

    /// Makes every answer wait `delay` first.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Queues answers for the next calls, in order; later calls get the default success.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.shared.script.lock().unwrap().extend(answers);
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
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(settle).await;
        self.calls()
    }
}

impl Drop for SandboxGraph {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let call = GraphCall {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        raw_body: String::from_utf8_lossy(&body).into_owned(),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
    };
    let recipient = call.recipient().to_owned();
    shared.calls.lock().unwrap().push(call);
    let scripted = shared.script.lock().unwrap().pop_front();
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let Some(answer) = scripted {
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
        let mut response = (status, Json(answer.body)).into_response();
        for (name, value) in answer.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
        return response;
    }
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    Json(default_answer(&method, uri.path(), &recipient, id)).into_response()
}

/// What the real Graph API answers on success, by endpoint.
fn default_answer(method: &Method, path: &str, recipient: &str, id: u64) -> Value {
    let endpoint = path.rsplit('/').next().unwrap_or("");
    match (method.as_str(), endpoint) {
        // LINE Messaging API.
        ("POST", "reply" | "push") => {
            json!({ "sentMessages": [{ "id": format!("{}", 3_000_000 + id), "quoteToken": "q" }] })
        }
        (_, "message_attachments") => json!({ "attachment_id": format!("{}", 1_000_000 + id) }),
        ("GET", "messenger_profile") => json!({ "data": [] }),
        (_, "messenger_profile") => json!({ "result": "success" }),
        ("POST", "personas") => json!({ "id": format!("{}", 2_000_000 + id) }),
        ("GET", "personas") => json!({ "data": [] }),
        (_, e) if e.ends_with("_thread_control") => json!({ "success": true }),
        ("DELETE", _) => json!({ "success": true }),
        _ => json!({ "recipient_id": recipient, "message_id": format!("m_sandbox_{id}") }),
    }
}
