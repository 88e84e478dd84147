//! A sandbox Graph API on loopback: records every call and answers like the Send API
//! (and like the LINE Messaging API's reply and push endpoints).
//! `demo` uses it so nobody needs a Facebook account to try the host; the tests use
//! it as their fake Graph server, with scripted failures.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
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
    /// For a call that came as an item of a Graph batch request: how many calls that
    /// request carried. `None` for a plain request.
    pub batch: Option<usize>,
    /// The HTTP status it was answered with (for a batch item, its own or its
    /// request's); 0 for no answer.
    pub status: u16,
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

    /// No answer: as an item of a batch request, `null` (the Graph API's answer for a
    /// call the batch did not finish); as a plain request or a whole batch request,
    /// a 502 without a body.
    pub fn no_answer() -> Self {
        Self {
            status: 0,
            body: Value::Null,
            headers: Vec::new(),
        }
    }

    /// No answer at all: the call is recorded (with status 0) and its connection
    /// stays open, unanswered, until the sandbox stops. A client's timeout, with no
    /// race against a delay. As an item of a batch request, the whole request hangs.
    pub fn hang() -> Self {
        Self {
            status: HANG,
            body: Value::Null,
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

/// The status of [`Scripted::hang`]: not an HTTP status, never sent.
const HANG: u16 = 1;

#[derive(Default)]
struct Shared {
    calls: Mutex<Vec<GraphCall>>,
    script: Mutex<VecDeque<Scripted>>,
    /// While set, the answer to every call.
    outage: Mutex<Option<Scripted>>,
    batch_script: Mutex<VecDeque<Scripted>>,
    delay_ms: AtomicU64,
    next_id: AtomicU64,
    /// Calls being answered now, and the most there ever were at once.
    in_flight: AtomicU64,
    most_in_flight: AtomicU64,
    /// While set, answers wait (see [`SandboxGraph::hold`]).
    held: AtomicBool,
    released: tokio::sync::Notify,
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

    /// Holds every answer, of the calls being answered and of those to come, until
    /// [`SandboxGraph::release`]: a barrier in the API, to see what a client does
    /// while its calls are pending without racing a delay.
    pub fn hold(&self) {
        self.shared.held.store(true, Ordering::SeqCst);
    }

    /// Lets the held answers go, and the answers to later calls.
    pub fn release(&self) {
        self.shared.held.store(false, Ordering::SeqCst);
        self.shared.released.notify_waiters();
    }

    /// How many calls are being answered now (held or delayed; a batch counts its
    /// items).
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Queues answers for the next calls, in order; later calls get the default success.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.shared.script.lock().unwrap().extend(answers);
    }

    /// While `answer` is set, every call (a batch request's items too) gets it,
    /// scripted answers waiting; `None` ends the outage.
    pub fn set_outage(&self, answer: Option<Scripted>) {
        *self.shared.outage.lock().unwrap() = answer;
    }

    /// The calls answered with success so far.
    pub fn delivered(&self) -> Vec<GraphCall> {
        let calls = self.shared.calls.lock().unwrap();
        calls.iter().filter(|c| c.status == 200).cloned().collect()
    }

    /// Queues answers for the next batch requests as a whole (their items are still
    /// recorded as calls, but none gets an answer of its own).
    pub fn script_batches(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.shared.batch_script.lock().unwrap().extend(answers);
    }

    /// The most calls that were being answered at once (a batch counts its items):
    /// with a delay set, how many sends were in flight together.
    pub fn most_in_flight(&self) -> u64 {
        self.shared.most_in_flight.load(Ordering::SeqCst)
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
    if let Some(batch) = batch_request(&method, &uri, &body) {
        return answer_batch(&shared, &uri, &headers, batch).await;
    }
    let call = GraphCall {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: form_fields(uri.query().unwrap_or("")),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        raw_body: String::from_utf8_lossy(&body).into_owned(),
        headers: header_fields(&headers),
        batch: None,
        status: 200,
    };
    let recipient = call.recipient().to_owned();
    let scripted = shared.next_answer();
    shared.record(call, scripted.as_ref());
    if scripted.as_ref().is_some_and(|a| a.status == HANG) {
        std::future::pending::<()>().await;
    }
    shared.wait(1).await;
    match scripted {
        Some(answer) => answer.into_response(),
        None => {
            let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
            Json(default_answer(&method, uri.path(), &recipient, id)).into_response()
        }
    }
}

impl Shared {
    /// The answer the next call gets instead of success: the outage's, or the next
    /// scripted one.
    fn next_answer(&self) -> Option<Scripted> {
        let outage = self.outage.lock().unwrap().clone();
        outage.or_else(|| self.script.lock().unwrap().pop_front())
    }

    /// Records `call`, answered with `answer` (success when `None`).
    fn record(&self, mut call: GraphCall, answer: Option<&Scripted>) {
        call.status = match answer {
            None => 200,
            Some(a) if a.status == HANG => 0,
            Some(a) => a.status,
        };
        self.calls.lock().unwrap().push(call);
    }

    /// The delay every answer waits, if one is set, counting the `calls` in flight
    /// meanwhile.
    async fn wait(&self, calls: u64) {
        let now = self.in_flight.fetch_add(calls, Ordering::SeqCst) + calls;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !self.held.load(Ordering::SeqCst) {
                break;
            }
            released.await;
        }
        self.in_flight.fetch_sub(calls, Ordering::SeqCst);
    }
}

impl IntoResponse for Scripted {
    /// The scripted answer; [`Scripted::no_answer`] is a 502 without a body.
    fn into_response(self) -> Response {
        if self.status == 0 {
            return StatusCode::BAD_GATEWAY.into_response();
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut response = (status, Json(self.body)).into_response();
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// `a=1&b=2` as a map, decoded.
fn form_fields(form: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(form.as_bytes())
        .into_owned()
        .collect()
}

/// Request headers as text, names lower-case; values that are not text are left out.
fn header_fields(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

/// A Graph batch request: a POST to the version's root (`/v25.0/`) whose JSON body
/// holds `batch`, a list of `{method, relative_url, body}` calls, with the
/// `access_token` and `appsecret_proof` they all use.
fn batch_request(method: &Method, uri: &Uri, body: &[u8]) -> Option<Value> {
    let root = uri.path().trim_matches('/');
    if method != Method::POST || root.contains('/') {
        return None;
    }
    let request: Value = serde_json::from_slice(body).ok()?;
    request.get("batch")?.is_array().then_some(request)
}

/// Records every call of a batch request as a call of its own and answers the list
/// of `{code, body}` the Graph API gives, with scripted answers taken one per call.
async fn answer_batch(
    shared: &Shared,
    uri: &Uri,
    headers: &HeaderMap,
    mut request: Value,
) -> Response {
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or("").to_owned();
    let items = match request["batch"].take() {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    let root = uri.path().trim_end_matches('/');
    let headers = header_fields(headers);
    // Scripted answers are taken on arrival, as for plain calls, before any delay.
    let whole = shared.batch_script.lock().unwrap().pop_front();
    let mut answers = Vec::with_capacity(items.len());
    for item in &items {
        let relative = text(item, "relative_url");
        let (path, item_query) = relative.split_once('?').unwrap_or((&relative, ""));
        let mut query = form_fields(item_query);
        for key in ["access_token", "appsecret_proof"] {
            query.insert(key.to_owned(), text(&request, key));
        }
        let form = text(item, "body");
        // The Send API fields: objects travel as JSON text, the rest as they are.
        let body: serde_json::Map<String, Value> = url::form_urlencoded::parse(form.as_bytes())
            .map(|(key, value)| {
                let parsed = value
                    .starts_with(['{', '['])
                    .then(|| serde_json::from_str(&value).ok())
                    .flatten();
                (
                    key.into_owned(),
                    parsed.unwrap_or(Value::String(value.into_owned())),
                )
            })
            .collect();
        let call = GraphCall {
            method: text(item, "method"),
            path: format!("{root}/{}", path.trim_start_matches('/')),
            query,
            body: Value::Object(body),
            content_type: "application/x-www-form-urlencoded".to_owned(),
            raw_body: form,
            headers: headers.clone(),
            batch: Some(items.len()),
            status: 200,
        };
        let scripted = if whole.is_some() {
            None
        } else {
            shared.next_answer()
        };
        shared.record(call.clone(), whole.as_ref().or(scripted.as_ref()));
        answers.push((
            (
                call.method.clone(),
                call.path.clone(),
                call.recipient().to_owned(),
            ),
            scripted,
        ));
    }
    let hangs = |a: &Option<Scripted>| a.as_ref().is_some_and(|a| a.status == HANG);
    if hangs(&whole) || answers.iter().any(|(_, a)| hangs(a)) {
        std::future::pending::<()>().await;
    }
    shared.wait(items.len() as u64).await;
    if let Some(answer) = whole {
        return answer.into_response();
    }
    let answers: Vec<Value> = answers
        .into_iter()
        .map(|((method, path, recipient), scripted)| match scripted {
            Some(answer) if answer.status == 0 => Value::Null,
            Some(answer) => {
                let headers: Vec<Value> = answer
                    .headers
                    .iter()
                    .map(|(name, value)| json!({ "name": name, "value": value }))
                    .collect();
                json!({ "code": answer.status, "headers": headers, "body": answer.body.to_string() })
            }
            None => {
                let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
                let method = method.parse().unwrap_or(Method::POST);
                let body = default_answer(&method, &path, &recipient, id);
                json!({ "code": 200, "body": body.to_string() })
            }
        })
        .collect();
    Json(Value::Array(answers)).into_response()
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
