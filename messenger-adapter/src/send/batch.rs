//! Send API calls that are ready at the same moment, for the same Page, go out as one
//! Graph batch request (at most 50 calls each, REFERENCE §e) instead of one HTTP
//! request each.
//!
//! Nothing waits for a batch to fill: the first call to arrive for a Page *owns* the
//! next batch, lets the runtime run every other task that is ready (one
//! `yield_now`), then sends whatever joined meanwhile. A lone call is sent as a
//! plain Send API call; under load, the calls the host hands over in one burst share
//! a few requests. Each call keeps its own result: the owner answers every member
//! through a oneshot, and a member retries its own call when its answer allows.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// The most calls the Graph API takes in one batch request.
pub const MAX_CALLS: usize = 50;

/// One Send API call waiting for its batch.
pub struct Waiting {
    /// The Send API body.
    pub body: Value,
    answer: oneshot::Sender<Result<Value>>,
}

impl Waiting {
    /// Gives the call its result.
    pub fn answer(self, result: Result<Value>) {
        // The caller may be gone (its runtime shutting down): nobody left to tell.
        let _ = self.answer.send(result);
    }
}

/// What joining gave a call.
pub struct Joined<'a> {
    /// Its result, once the batch holding it is answered.
    pub answer: oneshot::Receiver<Result<Value>>,
    /// Set when this call must send a batch: take it with [`Owner::take`].
    pub owner: Option<Owner<'a>>,
}

/// The duty to send one batch. Dropped without [`Owner::take`] (its call was
/// cancelled), it takes the batch anyway and answers every call in it that nothing
/// was sent, so none waits forever.
pub struct Owner<'a> {
    gatherer: &'a Gatherer,
    page: &'a str,
    taken: bool,
}

impl Owner<'_> {
    /// The batch to send: up to `limit` of the oldest waiting calls of the Page.
    pub fn take(mut self) -> Vec<Waiting> {
        self.taken = true;
        self.gatherer.take(self.page)
    }
}

impl Drop for Owner<'_> {
    fn drop(&mut self) {
        if !self.taken {
            for call in self.gatherer.take(self.page) {
                call.answer(Err(Error::Transport {
                    message: "the call that was to send this batch was cancelled; nothing \
                              was sent"
                        .to_owned(),
                    not_sent: true,
                    timed_out: false,
                }));
            }
        }
    }
}

#[derive(Default)]
struct Page {
    waiting: VecDeque<Waiting>,
    /// Owners that have not taken their batch yet; `owners × limit ≥ waiting` always,
    /// so every waiting call is sent by someone.
    owners: usize,
}

/// The calls waiting to be sent, per Page.
pub struct Gatherer {
    pages: HashMap<String, Mutex<Page>>,
    limit: usize,
}

impl Gatherer {
    /// Batches of at most `limit` calls (2 to [`MAX_CALLS`]) for `pages`.
    pub fn new<'a>(pages: impl IntoIterator<Item = &'a str>, limit: usize) -> Self {
        Self {
            pages: pages
                .into_iter()
                .map(|id| (id.to_owned(), Mutex::default()))
                .collect(),
            limit: limit.clamp(2, MAX_CALLS),
        }
    }

    /// Queues a call for `page`, or gives it back when the Page is not configured.
    pub fn join<'a>(
        &'a self,
        page: &'a str,
        body: Value,
    ) -> std::result::Result<Joined<'a>, Value> {
        let Some(slot) = self.pages.get(page) else {
            return Err(body);
        };
        let (answer, receiver) = oneshot::channel();
        let mut waiting = lock(slot);
        waiting.waiting.push_back(Waiting { body, answer });
        let owner = waiting.owners * self.limit < waiting.waiting.len();
        if owner {
            waiting.owners += 1;
        }
        drop(waiting);
        Ok(Joined {
            answer: receiver,
            // Built only for an owner: a dropped `Owner` takes a batch.
            owner: owner.then(|| Owner {
                gatherer: self,
                page,
                taken: false,
            }),
        })
    }

    /// An owner's batch: up to `limit` of the oldest waiting calls of `page`.
    fn take(&self, page: &str) -> Vec<Waiting> {
        let Some(slot) = self.pages.get(page) else {
            return Vec::new();
        };
        let mut page = lock(slot);
        page.owners = page.owners.saturating_sub(1);
        let n = page.waiting.len().min(self.limit);
        page.waiting.drain(..n).collect()
    }
}

/// A poisoned lock only means another call panicked while queueing: the queue itself
/// is still whole.
fn lock(slot: &Mutex<Page>) -> std::sync::MutexGuard<'_, Page> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `body` of a batch item: the Send API fields as a form, objects as JSON text.
pub fn form_body(body: &Value) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    if let Value::Object(fields) = body {
        for (key, value) in fields {
            match value {
                Value::String(text) => form.append_pair(key, text),
                other => form.append_pair(key, &other.to_string()),
            };
        }
    }
    form.finish()
}

/// The result of one call from its item of a batch answer (`{code, headers, body}`,
/// or `null` when the batch ended before it was answered).
pub fn item_result(item: Option<&Value>) -> std::result::Result<Value, ItemFailure> {
    let Some(item) = item.filter(|i| !i.is_null()) else {
        return Err(ItemFailure::Unanswered);
    };
    // Without a status nothing says what happened to the call.
    let Some(code) = item
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
    else {
        return Err(ItemFailure::Unanswered);
    };
    let body: Option<Value> = item
        .get("body")
        .and_then(Value::as_str)
        .and_then(|b| serde_json::from_str(b).ok());
    match body {
        Some(body) if (200..300).contains(&code) && body.get("error").is_none() => Ok(body),
        None if (200..300).contains(&code) => Ok(Value::Null),
        body => Err(ItemFailure::Answered {
            code,
            headers: Box::new(item_headers(item)),
            body,
        }),
    }
}

/// An item's `headers`, a list of `{name, value}`: the usage headers that say how
/// long a rate-limited call must wait come back there.
fn item_headers(item: &Value) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for header in item
        .get("headers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = header.get("name").and_then(Value::as_str).unwrap_or("");
        let value = header.get("value").and_then(Value::as_str).unwrap_or("");
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// Why a batch item did not succeed.
#[derive(Debug, PartialEq)]
pub enum ItemFailure {
    /// No answer: the Graph API may or may not have delivered it.
    Unanswered,
    /// An error answer, with its HTTP status, headers and body.
    Answered {
        /// HTTP status of the item.
        code: u16,
        /// Its headers.
        headers: Box<HeaderMap>,
        /// Its body, when it was JSON.
        body: Option<Value>,
    },
}

/// The error of a call the batch left unanswered.
pub fn unanswered() -> Error {
    Error::Transport {
        message: "the batch request ended before this call was answered; it may have \
                  been delivered"
            .to_owned(),
        not_sent: false,
        timed_out: true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_call_has_an_owner_and_batches_keep_the_limit() {
        let gatherer = Gatherer::new(["1"], 3);
        let joined: Vec<_> = (0..7)
            .map(|i| gatherer.join("1", json!(i)).ok().unwrap())
            .collect();
        let (owners, _members): (Vec<_>, Vec<_>) =
            joined.into_iter().partition(|j| j.owner.is_some());
        assert_eq!(owners.len(), 3, "7 calls in batches of 3 need 3 senders");
        let sizes: Vec<_> = owners
            .into_iter()
            .map(|j| j.owner.unwrap().take().len())
            .collect();
        assert_eq!(sizes, [3, 3, 1]);
        assert!(gatherer.join("1", json!(8)).ok().unwrap().owner.is_some());
    }

    #[test]
    fn calls_are_taken_in_arrival_order_and_answered() {
        let gatherer = Gatherer::new(["1"], 50);
        let mut first = gatherer.join("1", json!("a")).ok().unwrap();
        let mut second = gatherer.join("1", json!("b")).ok().unwrap();
        assert!(second.owner.is_none());
        let batch = first.owner.take().unwrap().take();
        let bodies: Vec<_> = batch.iter().map(|w| w.body.clone()).collect();
        assert_eq!(bodies, [json!("a"), json!("b")]);
        for (i, waiting) in batch.into_iter().enumerate() {
            waiting.answer(Ok(json!(i)));
        }
        assert_eq!(first.answer.try_recv().unwrap().unwrap(), json!(0));
        assert_eq!(second.answer.try_recv().unwrap().unwrap(), json!(1));
    }

    #[test]
    fn a_cancelled_owner_tells_its_batch_that_nothing_was_sent() {
        let gatherer = Gatherer::new(["1"], 50);
        let owner = gatherer.join("1", json!("a")).ok().unwrap();
        let mut member = gatherer.join("1", json!("b")).ok().unwrap();
        drop(owner); // cancelled before it took the batch
        let Err(Error::Transport { not_sent, .. }) = member.answer.try_recv().unwrap() else {
            panic!("the member must be answered");
        };
        assert!(not_sent, "it may be sent again");
        assert!(
            gatherer.join("1", json!("c")).ok().unwrap().owner.is_some(),
            "the next call owns a new batch"
        );
    }

    #[test]
    fn an_unknown_page_is_refused() {
        let gatherer = Gatherer::new(["1"], 50);
        assert_eq!(gatherer.join("2", json!(1)).err(), Some(json!(1)));
    }

    #[test]
    fn form_bodies_carry_objects_as_json_and_strings_as_they_are() {
        let body = json!({
            "recipient": { "id": "7" },
            "messaging_type": "RESPONSE",
            "message": { "text": "a&b=c é" }
        });
        let form = form_body(&body);
        let fields: HashMap<String, String> = url::form_urlencoded::parse(form.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(fields["messaging_type"], "RESPONSE");
        assert_eq!(
            serde_json::from_str::<Value>(&fields["recipient"]).unwrap(),
            json!({ "id": "7" })
        );
        assert_eq!(
            serde_json::from_str::<Value>(&fields["message"]).unwrap(),
            json!({ "text": "a&b=c é" })
        );
    }

    #[test]
    fn items_are_read_by_code_and_body() {
        let ok = json!({ "code": 200, "body": "{\"recipient_id\":\"7\",\"message_id\":\"m\"}" });
        assert_eq!(item_result(Some(&ok)).unwrap()["message_id"], "m");
        let failed = json!({
            "code": 400,
            "headers": [{ "name": "X-Page-Usage", "value": "{\"call_count\":100}" }],
            "body": "{\"error\":{\"code\":551}}"
        });
        let Err(ItemFailure::Answered {
            code,
            headers,
            body,
        }) = item_result(Some(&failed))
        else {
            panic!("an error item is a failure");
        };
        assert_eq!(
            (code, body.unwrap()["error"]["code"].as_i64()),
            (400, Some(551))
        );
        assert_eq!(headers["x-page-usage"], "{\"call_count\":100}");
        let no_code = json!({ "body": "{}" });
        assert_eq!(item_result(Some(&no_code)), Err(ItemFailure::Unanswered));
        assert_eq!(
            item_result(Some(&Value::Null)),
            Err(ItemFailure::Unanswered)
        );
        assert_eq!(item_result(None), Err(ItemFailure::Unanswered));
        let hidden = json!({ "code": 200, "body": "{\"error\":{\"code\":2}}" });
        assert!(matches!(
            item_result(Some(&hidden)),
            Err(ItemFailure::Answered { code: 200, .. })
        ));
    }
}
