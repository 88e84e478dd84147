//! The Graph API client: one connection pool, `appsecret_proof` on every call, and
//! retries by the error's class (Graph `code`/`error_subcode`, HTTP status).

use std::time::Duration;

use reqwest::{header::HeaderMap, Method, StatusCode};
use serde_json::Value;

use adapter_kit::Log;

use super::{
    batch::{self, Gatherer, ItemFailure, Waiting},
    pace::Pacer,
};
use crate::{
    error::{Error, ErrorClass, GraphError, Result},
    settings::{PageSettings, Settings},
    webhook::verify::appsecret_proof,
};

/// What a Graph call sends.
#[derive(Clone, Copy)]
pub enum Body<'a> {
    /// Nothing.
    None,
    /// A JSON body.
    Json(&'a Value),
    /// A multipart upload: the `message` field and the file as `filedata`.
    Upload(&'a Upload),
}

/// A file to upload with the Attachment Upload API.
pub struct Upload {
    /// The `message` form field (`{"attachment": {"type", "payload"}}`).
    pub message: Value,
    /// The file name sent.
    pub file_name: String,
    /// Its MIME type.
    pub mime: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// One Graph API call: as which Page, what, and under which pacing.
#[derive(Clone)]
struct Call<'a> {
    page: &'a PageSettings,
    method: Method,
    path: &'a str,
    body: Body<'a>,
    /// Audio or video: paced under the media limit too.
    media: bool,
}

impl<'a> Call<'a> {
    /// A Send API call.
    fn send(page: &'a PageSettings, body: &'a Value, media: bool) -> Self {
        Self {
            page,
            method: Method::POST,
            path: SEND_PATH,
            body: Body::Json(body),
            media,
        }
    }
}

/// Calls the Graph API as one of the configured Pages.
pub struct Graph {
    client: reqwest::Client,
    pacer: Pacer,
    /// Send API calls waiting to go out together; `None` when `batch_size` is 1.
    gatherer: Option<Gatherer>,
    /// `{graph_api_base}/{graph_api_version}`, without a trailing slash.
    base: String,
    settings: Settings,
    log: Log,
}

impl Graph {
    /// A client for `settings`, with its own connection pool.
    pub fn new(settings: Settings, log: Log) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(settings.request_timeout())
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!(
                "dmflow-messenger-adapter/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| Error::Settings(format!("cannot build the HTTP client: {e}")))?;
        let base = format!(
            "{}/{}",
            settings.graph_api_base.trim_end_matches('/'),
            settings.graph_api_version
        );
        let pacer = Pacer::new(
            settings.pages.iter().map(|p| p.id.as_str()),
            settings.send_rate_per_second,
            settings.media_rate_per_second,
        );
        let gatherer = (settings.batch_size > 1).then(|| {
            Gatherer::new(
                settings.pages.iter().map(|p| p.id.as_str()),
                settings.batch_size,
            )
        });
        Ok(Self {
            client,
            pacer,
            gatherer,
            base,
            settings,
            log,
        })
    }

    /// A Send API call, paced under the Page's limits (`media`: audio or video), with
    /// the number of tries it took. Its first try may share a batch request with the
    /// Page's other calls ready at the same moment ([`batch`]); audio and video, paced
    /// on their own, always go alone.
    pub async fn send(
        &self,
        page: &PageSettings,
        body: &Value,
        media: bool,
    ) -> (Result<Value>, u32) {
        let call = Call::send(page, body, media);
        let gatherer = self.gatherer.as_ref().filter(|_| !media);
        let Some(gatherer) = gatherer else {
            return self.call_counted(call).await;
        };
        self.pacer.ready(&page.id, false).await;
        let Ok(joined) = gatherer.join(&page.id, body.clone()) else {
            return self.call_counted(call).await;
        };
        if let Some(owner) = joined.owner {
            // Every task that is ready runs first: the calls the host handed over
            // together join this batch.
            tokio::task::yield_now().await;
            self.send_together(page, owner.take()).await;
        }
        let first = joined
            .answer
            .await
            .unwrap_or_else(|_| Err(batch::unanswered()));
        self.retry(&call, first).await
    }

    /// Sends `calls` (one try each) and answers each of them: alone as a plain call,
    /// or as one batch request.
    async fn send_together(&self, page: &PageSettings, mut calls: Vec<Waiting>) {
        if calls.len() <= 1 {
            if let Some(call) = calls.pop() {
                let result = self.try_once(&Call::send(page, &call.body, false)).await;
                call.answer(result);
            }
            return;
        }
        let items: Vec<Value> = calls
            .iter()
            .map(|call| {
                serde_json::json!({
                    "method": "POST",
                    "relative_url": SEND_PATH,
                    "body": batch::form_body(&call.body),
                })
            })
            .collect();
        let token = page.access_token.expose();
        let proof = appsecret_proof(self.settings.app_secret.expose(), token);
        let request = self
            .client
            .post(format!("{}/", self.base))
            .json(&serde_json::json!({
                "access_token": token,
                "appsecret_proof": proof,
                "batch": items,
            }));
        let (headers, answers) = match read_answer(request).await {
            Ok((status, headers, Some(Value::Array(answers)))) if status.is_success() => {
                (headers, answers)
            }
            // The whole request failed: every call shares its error.
            Ok((status, headers, value)) => {
                let error = if status.is_success() {
                    // A success that is not a list of answers: what was done is unknown.
                    batch::unanswered()
                } else {
                    Error::Graph(Box::new(graph_error(status, &headers, value.as_ref())))
                };
                calls.into_iter().for_each(|c| c.answer(Err(error.clone())));
                return;
            }
            Err(error) => {
                calls.into_iter().for_each(|c| c.answer(Err(error.clone())));
                return;
            }
        };
        for (i, call) in calls.into_iter().enumerate() {
            let result = match batch::item_result(answers.get(i)) {
                Ok(answer) => Ok(answer),
                Err(ItemFailure::Unanswered) => Err(batch::unanswered()),
                Err(ItemFailure::Answered {
                    code,
                    headers: own,
                    body,
                }) => {
                    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
                    // The usage headers come with each call's answer.
                    let headers = if own.is_empty() { &headers } else { &own };
                    Err(Error::Graph(Box::new(graph_error(
                        status,
                        headers,
                        body.as_ref(),
                    ))))
                }
            };
            call.answer(result);
        }
    }

    /// `method path` as `page`, paced and retried as its errors allow.
    pub async fn call(
        &self,
        page: &PageSettings,
        method: Method,
        path: &str,
        body: Body<'_>,
        media: bool,
    ) -> Result<Value> {
        let call = Call {
            page,
            method,
            path,
            body,
            media,
        };
        self.call_counted(call).await.0
    }

    async fn call_counted(&self, call: Call<'_>) -> (Result<Value>, u32) {
        self.pacer.ready(&call.page.id, call.media).await;
        let first = self.try_once(&call).await;
        self.retry(&call, first).await
    }

    /// Given the `first` try's result, tries a failed call again as long as the
    /// errors allow; the result and the number of tries in all.
    ///
    /// When a try that may have reached Meta was tried again (`retry_after_timeout`),
    /// the call's error is an unknown outcome whatever the last try's error says.
    async fn retry(&self, call: &Call<'_>, first: Result<Value>) -> (Result<Value>, u32) {
        let (result, attempts, may_have_arrived) = self.retry_inner(call, first).await;
        match result {
            Err(error) if may_have_arrived => (Err(error.after_unknown_try()), attempts),
            result => (result, attempts),
        }
    }

    /// [`Self::retry`], and whether a try before the last one may have reached Meta.
    async fn retry_inner(
        &self,
        call: &Call<'_>,
        first: Result<Value>,
    ) -> (Result<Value>, u32, bool) {
        let mut error = match first {
            Ok(value) => return (Ok(value), 1, false),
            Err(error) => error,
        };
        let mut may_have_arrived = false;
        let mut attempt = 1;
        let Call {
            page,
            ref method,
            path,
            media,
            ..
        } = *call;
        let max = self.settings.max_attempts;
        loop {
            let Some(delay) = self.retry_delay(&error, attempt) else {
                return (Err(error), attempt, may_have_arrived);
            };
            if attempt >= max {
                return (Err(error), attempt, may_have_arrived);
            }
            may_have_arrived |= error.may_have_arrived();
            self.log.warn(|| {
                format!(
                    "{method} {path} for page {} failed (try {attempt} of {max}), retrying in {delay:?}: {error}",
                    page.id
                )
            });
            tokio::time::sleep(delay).await;
            attempt += 1;
            self.pacer.ready(&page.id, media).await;
            error = match self.try_once(call).await {
                Ok(value) => return (Ok(value), attempt, may_have_arrived),
                Err(error) => error,
            };
        }
    }

    async fn try_once(&self, call: &Call<'_>) -> Result<Value> {
        let Call {
            page, path, body, ..
        } = *call;
        let token = page.access_token.expose();
        let proof = appsecret_proof(self.settings.app_secret.expose(), token);
        let mut request = self
            .client
            .request(
                call.method.clone(),
                format!("{}/{}", self.base, path.trim_start_matches('/')),
            )
            .query(&[("access_token", token), ("appsecret_proof", proof.as_str())]);
        match body {
            Body::None => {}
            Body::Json(json) => request = request.json(json),
            Body::Upload(upload) => {
                let file = reqwest::multipart::Part::bytes(upload.bytes.clone())
                    .file_name(upload.file_name.clone())
                    .mime_str(&upload.mime)
                    .map_err(|_| {
                        Error::InvalidMessage(format!("bad MIME type {:?}", upload.mime))
                    })?;
                let form = reqwest::multipart::Form::new()
                    .text("message", upload.message.to_string())
                    .part("filedata", file);
                request = request.multipart(form);
            }
        }
        let (status, headers, value) = read_answer(request).await?;
        match value {
            Some(value) if status.is_success() && value.get("error").is_none() => Ok(value),
            None if status.is_success() => Ok(Value::Null),
            value => Err(Error::Graph(Box::new(graph_error(
                status,
                &headers,
                value.as_ref(),
            )))),
        }
    }

    /// How long to wait before trying `error` again, or `None` when it must not be.
    fn retry_delay(&self, error: &Error, attempt: u32) -> Option<Duration> {
        let backoff = backoff(
            self.settings.backoff_base_ms,
            self.settings.backoff_max_ms,
            attempt,
        );
        match error {
            Error::Graph(graph) => match graph.class {
                ErrorClass::Transient => Some(backoff),
                ErrorClass::RateLimited => {
                    let wait = Duration::from_millis(graph.retry_after_ms).max(backoff);
                    // A limit that clears in minutes is reported, not waited out.
                    (wait.as_millis() <= u128::from(self.settings.backoff_max_ms)).then_some(wait)
                }
                ErrorClass::Permanent => None,
            },
            Error::Transport { not_sent: true, .. } => Some(backoff),
            // The request may have reached Meta: resending could deliver it twice.
            Error::Transport { .. } if self.settings.retry_after_timeout => Some(backoff),
            _ => None,
        }
    }
}

/// Sends `request` and reads its answer: status, headers, and the body when it is JSON.
async fn read_answer(
    request: reqwest::RequestBuilder,
) -> Result<(StatusCode, HeaderMap, Option<Value>)> {
    let response = request.send().await.map_err(Error::transport)?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.map_err(Error::transport)?;
    Ok((status, headers, serde_json::from_slice(&bytes).ok()))
}

/// The Send API's path.
const SEND_PATH: &str = "me/messages";

/// Exponential backoff with full jitter in the upper half: base·2^(n-1), capped.
fn backoff(base_ms: u64, max_ms: u64, attempt: u32) -> Duration {
    let exp = base_ms.saturating_mul(1 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(max_ms).max(1);
    Duration::from_millis(capped / 2 + fastrand::u64(0..=capped / 2))
}

/// Builds a classified [`GraphError`] from an error answer.
pub fn graph_error(status: StatusCode, headers: &HeaderMap, body: Option<&Value>) -> GraphError {
    let error = body.and_then(|b| b.get("error"));
    let field = |k: &str| error.and_then(|e| e.get(k));
    let code = field("code").and_then(Value::as_i64).unwrap_or(0);
    let subcode = field("error_subcode").and_then(Value::as_i64).unwrap_or(0);
    let is_transient = field("is_transient").and_then(Value::as_bool) == Some(true);
    let message = field("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("no error message")
                .to_owned()
        });
    let fbtrace_id = field("fbtrace_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    GraphError {
        http_status: status.as_u16(),
        code,
        subcode,
        message,
        fbtrace_id,
        is_transient,
        class: classify(status.as_u16(), code, subcode, is_transient),
        retry_after_ms: retry_after_ms(headers),
    }
}

/// REFERENCE §f: what may be retried, and how.
pub fn classify(http_status: u16, code: i64, subcode: i64, is_transient: bool) -> ErrorClass {
    match (code, subcode) {
        // Marketing Messages frequency cap and privacy terms: retrying cannot help.
        (4, 2_018_354) | (2, 2_018_344) => ErrorClass::Permanent,
        (4 | 17 | 32 | 613, _) => ErrorClass::RateLimited,
        (1200 | 2, _) => ErrorClass::Transient,
        (10 | 100 | 190 | 200..=299 | 368 | 551 | 2022, _) => ErrorClass::Permanent,
        _ if http_status == 429 => ErrorClass::RateLimited,
        _ if is_transient || http_status >= 500 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// The longest `estimated_time_to_regain_access` (minutes) in the usage headers.
fn retry_after_ms(headers: &HeaderMap) -> u64 {
    let mut minutes = 0;
    for name in ["x-business-use-case-usage", "x-app-usage", "x-page-usage"] {
        let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        if let Ok(json) = serde_json::from_str::<Value>(value) {
            max_regain(&json, &mut minutes);
        }
    }
    if let Some(secs) = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return (minutes * 60_000).max(secs * 1000);
    }
    minutes * 60_000
}

fn max_regain(value: &Value, minutes: &mut u64) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "estimated_time_to_regain_access" {
                    *minutes = (*minutes).max(v.as_u64().unwrap_or(0));
                } else {
                    max_regain(v, minutes);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| max_regain(v, minutes)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_reference() {
        assert_eq!(classify(500, 1200, 0, false), ErrorClass::Transient);
        assert_eq!(classify(400, 2, 0, false), ErrorClass::Transient);
        assert_eq!(classify(400, 613, 0, false), ErrorClass::RateLimited);
        assert_eq!(classify(429, 0, 0, false), ErrorClass::RateLimited);
        assert_eq!(classify(400, 190, 0, false), ErrorClass::Permanent);
        assert_eq!(classify(400, 10, 2_018_278, false), ErrorClass::Permanent);
        assert_eq!(classify(400, 551, 0, false), ErrorClass::Permanent);
        assert_eq!(classify(400, 4, 2_018_354, false), ErrorClass::Permanent);
        assert_eq!(classify(502, 0, 0, false), ErrorClass::Transient);
        assert_eq!(classify(400, 1, 99, true), ErrorClass::Transient);
    }

    #[test]
    fn usage_headers_give_the_wait() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-business-use-case-usage",
            r#"{"123":[{"type":"messenger","call_count":100,"estimated_time_to_regain_access":3}]}"#
                .parse()
                .unwrap(),
        );
        assert_eq!(retry_after_ms(&headers), 180_000);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..10 {
            let d = backoff(100, 1000, attempt).as_millis() as u64;
            let full = (100u64 << (attempt - 1)).min(1000);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d}");
        }
    }
}
