//! Sending one event's replies, with the rules that make "nothing lost, nothing
//! doubled" hold under faults:
//!
//! - before a reply goes out, that its send has started is made durable; after a
//!   crash, a reply whose send had started and never finished has an unknown outcome
//!   and is not sent again (unless `[queue] resend_unknown`), so a restart never
//!   doubles it;
//! - a reply that failed without being delivered (the channel's API down, refusing
//!   connections, answering 5xx, rate limiting) is rescheduled durably with backoff
//!   and jitter, across restarts, until it is sent or `[queue] retry_for_secs` has
//!   passed since its event was accepted; the conversation's later events wait;
//! - a permanent error fails the event at once (its later replies would arrive out
//!   of context);
//! - each reply carries an idempotency key, the same on every try, for channels that
//!   can use one (LINE's `X-Line-Retry-Key`).

use std::time::Duration;

use adapter_api::{AdapterError, ErrorKind, OutboundMessage, SendReceipt};
use sha2::Digest;
use tokio::time::Instant;

use super::{Inner, Job};
use crate::store::{now_ms, EventKey, Outcome, Progress, StoreError};

/// The first wait before a reply is tried again, doubled at each failure up to
/// [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How long a conversation waits when its channel is down and says no more, or the
/// queue could not record a send.
const WAIT_BRIEFLY: Duration = Duration::from_secs(1);

/// How long a reply waits when its adapter was being replaced as it was handed over.
const WAIT_FOR_REPLACEMENT: Duration = Duration::from_millis(100);

/// What one send came to.
enum Sent {
    /// Delivered.
    Yes,
    /// Not delivered; may be tried again later, not before `retry_after`.
    No { retry_after: Duration },
    /// Not delivered, because the adapter was shutting down: try at once on the next.
    Refused,
    /// Perhaps delivered (timed out, connection lost after the request, a panic).
    Unknown,
    /// Not delivered, and trying again cannot help.
    Never,
}

fn classify(result: &Result<SendReceipt, AdapterError>) -> Sent {
    let Err(err) = result else {
        return Sent::Yes;
    };
    match err.kind {
        ErrorKind::TRANSIENT | ErrorKind::RATE_LIMITED => Sent::No {
            retry_after: Duration::from_millis(err.retry_after_ms),
        },
        ErrorKind::SHUT_DOWN => Sent::Refused,
        ErrorKind::TIMEOUT | ErrorKind::PANICKED => Sent::Unknown,
        _ => Sent::Never,
    }
}

/// What became of a job for now.
pub(super) enum Step {
    /// Every reply dealt with, or the event failed: it is finished.
    Finished,
    /// Its conversation must wait until then (`job` says how far it got).
    Wait(Instant),
    /// This host no longer owns it (a shared queue's partition was lost): another
    /// host processes it.
    Lost,
    /// The host is stopping: nothing more is started; the job stays in the queue as
    /// it is, for the next start.
    Stopped,
}

/// Sends what is left of `job`'s replies.
pub(super) async fn deliver(inner: &Inner, job: &mut Job) -> Step {
    let replies = inner.handler.replies(&job.event);
    let total = u32::try_from(replies.len()).unwrap_or(u32::MAX);
    let channel = &job.channel;
    if job.progress.started > job.progress.sent {
        // The host stopped while this reply was being sent.
        let index = job.progress.sent;
        channel.metrics.send("unknown");
        if inner.resend_unknown {
            tracing::warn!(channel = channel.name, event_id = %job.event.event_id, reply = index, "a reply was being sent when the host stopped; sent again (resend_unknown)");
            job.progress.started = index;
        } else {
            tracing::warn!(channel = channel.name, event_id = %job.event.event_id, reply = index, "a reply was being sent when the host stopped; its outcome is unknown and it is not sent again");
            job.progress.sent = job.progress.started;
        }
    }
    let mut _sending = None;
    while job.progress.sent < total {
        let index = job.progress.sent;
        let wait_ms = job.progress.retry_at_ms - now_ms();
        if wait_ms > 0 {
            return Step::Wait(Instant::now() + Duration::from_millis(wait_ms.unsigned_abs()));
        }
        let Some(adapter) = channel.adapter() else {
            // Down: back when the breaker tries a fresh adapter (already past while
            // one is being built: look again shortly).
            let soon = Instant::now() + WAIT_FOR_REPLACEMENT;
            let until = channel.retry_at().map(Instant::from_std);
            return Step::Wait(until.map_or(Instant::now() + WAIT_BRIEFLY, |at| at.max(soon)));
        };
        // Held until this send's outcome is written down: until the next send starts,
        // or the job is finished or returned.
        let Some(started_send) = super::Sending::start(inner) else {
            return Step::Stopped;
        };
        _sending = Some(started_send);
        match inner.store.start_send(&job.key, index).await {
            Ok(()) => {}
            Err(StoreError::Fenced) => return lost(job),
            Err(err) => {
                tracing::error!(channel = channel.name, event_id = %job.event.event_id, "{err}; the reply waits");
                return Step::Wait(Instant::now() + WAIT_BRIEFLY);
            }
        }
        let message = with_idempotency_key(replies[index as usize].clone(), &job.key, index);
        let started = std::time::Instant::now();
        let result = adapter.send(message, inner.send_timeout).await;
        record(channel, &result, started);
        let sent = classify(&result);
        if let Err(err) = &result {
            if err.kind == ErrorKind::PANICKED {
                channel.plugin_failed(&adapter, "send panicked");
            } else if never_called_back(err) {
                channel.metrics.plugin_failures.inc();
            }
        }
        match sent {
            Sent::Yes => {
                if let Ok(receipt) = &result {
                    tracing::debug!(channel = channel.name, event_id = %job.event.event_id, message_id = %receipt.message_id, "reply sent");
                }
            }
            Sent::Unknown if !inner.resend_unknown => {
                channel.metrics.send("unknown");
                tracing::warn!(channel = channel.name, event_id = %job.event.event_id, reply = index, "reply outcome unknown (it may have been delivered); not sent again: {}", describe(&result));
            }
            Sent::No { retry_after } => {
                return reschedule(inner, job, retry_after, &result).await;
            }
            Sent::Unknown => return reschedule(inner, job, Duration::ZERO, &result).await,
            Sent::Refused => {
                job.progress.started = index;
                let progress = job.progress;
                if let Err(StoreError::Fenced) = inner.store.reschedule(&job.key, progress).await {
                    return lost(job);
                }
                return Step::Wait(Instant::now() + WAIT_FOR_REPLACEMENT);
            }
            Sent::Never => {
                tracing::warn!(channel = channel.name, event_id = %job.event.event_id, reply = index, "reply failed for good: {}", describe(&result));
                note(inner.store.finish(&job.key, Outcome::Failed));
                return Step::Finished;
            }
        }
        job.progress = Progress {
            sent: index + 1,
            started: index + 1,
            attempts: 0,
            retry_at_ms: 0,
        };
        if job.progress.sent < total {
            note(inner.store.progress(&job.key, job.progress.sent));
        }
    }
    note(inner.store.finish(&job.key, Outcome::Done));
    Step::Finished
}

/// Gives the job back to the queue: another host owns it now.
fn lost(job: &Job) -> Step {
    tracing::info!(channel = job.channel.name, event_id = %job.event.event_id, "left to the host that owns its conversation now");
    Step::Lost
}

/// Whether `err` is the host's own deadline cutting off a plugin that never called
/// back (a plugin failure), rather than the channel's API timing out inside the
/// plugin, which reports it as [`ErrorKind::TIMEOUT`] too.
fn never_called_back(err: &AdapterError) -> bool {
    adapter_api::Adapter::missed_deadline(err)
}

/// Reply `job.progress.sent` was not delivered: tries it again after a backoff (at
/// least `retry_after`), durably, or fails the event when its retry window is over.
async fn reschedule(
    inner: &Inner,
    job: &mut Job,
    retry_after: Duration,
    result: &Result<SendReceipt, AdapterError>,
) -> Step {
    let channel = &job.channel;
    let attempts = job.progress.attempts.saturating_add(1);
    let wait = backoff(attempts).max(retry_after);
    let retry_at_ms = now_ms().saturating_add(millis(wait));
    let deadline = job.accepted_ms.saturating_add(millis(inner.retry_for));
    if retry_at_ms > deadline {
        tracing::warn!(channel = channel.name, event_id = %job.event.event_id, reply = job.progress.sent, attempts, "reply failed for good: still failing when its retry window closed: {}", describe(result));
        note(inner.store.finish(&job.key, Outcome::Failed));
        return Step::Finished;
    }
    tracing::info!(channel = channel.name, event_id = %job.event.event_id, reply = job.progress.sent, attempts, wait_ms = millis(wait), "reply not delivered; tried again later: {}", describe(result));
    job.progress = Progress {
        sent: job.progress.sent,
        started: job.progress.sent,
        attempts,
        retry_at_ms,
    };
    match inner.store.reschedule(&job.key, job.progress).await {
        Err(StoreError::Fenced) => lost(job),
        written => {
            note(written);
            Step::Wait(Instant::now() + wait)
        }
    }
}

/// The wait before try `attempts + 1`: exponential, capped, with jitter in its upper
/// half so that replies failed together are not all tried again together.
fn backoff(attempts: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << attempts.saturating_sub(1).min(16));
    let capped = millis(exp.min(BACKOFF_MAX)).unsigned_abs();
    Duration::from_millis(capped / 2 + fastrand::u64(0..=capped / 2))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Counts a send in the channel's metrics.
fn record(
    channel: &crate::channels::Channel,
    result: &Result<SendReceipt, AdapterError>,
    started: std::time::Instant,
) {
    let metrics = &channel.metrics;
    metrics
        .send_seconds
        .observe(started.elapsed().as_secs_f64());
    let (outcome, retries) = match result {
        Ok(receipt) => (
            "ok",
            u64::from(receipt.attempts.saturating_sub(receipt.parts)),
        ),
        Err(err) => (err.kind.name(), attempts_of(err).saturating_sub(1)),
    };
    metrics.retries.inc_by(retries);
    metrics.send(outcome);
}

fn describe(result: &Result<SendReceipt, AdapterError>) -> String {
    match result {
        Ok(_) => "sent".to_owned(),
        Err(err) if err.details_json.is_empty() => err.to_string(),
        Err(err) => format!("{err} {}", err.details_json),
    }
}

fn note<E: std::fmt::Display>(result: Result<(), E>) {
    if let Err(err) = result {
        tracing::error!("{err}");
    }
}

fn attempts_of(err: &AdapterError) -> u64 {
    serde_json::from_str::<serde_json::Value>(&err.details_json)
        .ok()
        .and_then(|d| d["attempts"].as_u64())
        .unwrap_or(1)
}

/// The idempotency key of reply `index` of an event: the same on every try, across
/// restarts; different for every reply.
pub(crate) fn idempotency_key(key: &EventKey, index: u32) -> String {
    let digest = sha2::Sha256::new()
        .chain_update(&key.channel)
        .chain_update([0])
        .chain_update(&key.event_id)
        .chain_update([0])
        .chain_update(key.at_ms.to_le_bytes())
        .chain_update(index.to_le_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

/// `message` with its idempotency key in `options_json` (the contract's
/// host-reserved `idempotency_key`), its other options kept.
fn with_idempotency_key(
    mut message: OutboundMessage,
    key: &EventKey,
    index: u32,
) -> OutboundMessage {
    let mut options = match serde_json::from_str::<serde_json::Value>(&message.options_json) {
        Ok(serde_json::Value::Object(map)) => map,
        // Empty: no options yet. Anything else is the plugin's to refuse, untouched.
        _ if message.options_json.trim().is_empty() => serde_json::Map::new(),
        _ => return message,
    };
    options.insert(
        "idempotency_key".to_owned(),
        serde_json::Value::String(idempotency_key(key, index)),
    );
    message.options_json = serde_json::Value::Object(options).to_string().into();
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> EventKey {
        EventKey {
            channel: "m".to_owned(),
            event_id: id.to_owned(),
            at_ms: 5,
        }
    }

    #[test]
    fn the_idempotency_key_is_stable_per_reply_and_differs_between_replies() {
        assert_eq!(idempotency_key(&key("a"), 0), idempotency_key(&key("a"), 0));
        assert_ne!(idempotency_key(&key("a"), 0), idempotency_key(&key("a"), 1));
        assert_ne!(idempotency_key(&key("a"), 0), idempotency_key(&key("b"), 0));
        assert_eq!(idempotency_key(&key("a"), 0).len(), 32);
    }

    #[test]
    fn the_idempotency_key_joins_the_options_the_bot_set() {
        let mut message = OutboundMessage::text("page", "user", "hi");
        message.options_json = r#"{"metadata":"m1"}"#.into();
        let keyed = with_idempotency_key(message, &key("a"), 2);
        let options: serde_json::Value = serde_json::from_str(&keyed.options_json).unwrap();
        assert_eq!(options["metadata"], "m1");
        assert_eq!(options["idempotency_key"], idempotency_key(&key("a"), 2));
        let plain = with_idempotency_key(OutboundMessage::text("p", "u", "hi"), &key("a"), 0);
        assert!(plain.options_json.contains("idempotency_key"));
    }

    #[test]
    fn a_timeout_the_plugin_reports_is_not_counted_as_a_plugin_failure() {
        // The channel's API did not answer in time: the plugin worked.
        let reported = AdapterError::new(ErrorKind::TIMEOUT, "the Graph API did not answer");
        assert!(!never_called_back(&reported));
        let transient = AdapterError::new(ErrorKind::TRANSIENT, "x");
        assert!(!never_called_back(&transient));
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_in_the_upper_half() {
        for attempts in 1..40 {
            let exp = BACKOFF_BASE.saturating_mul(1 << (attempts - 1).min(16));
            let cap = exp.min(BACKOFF_MAX);
            let wait = backoff(attempts);
            assert!(wait >= cap / 2 && wait <= cap, "{attempts}: {wait:?}");
        }
    }

    #[test]
    fn errors_are_sorted_by_whether_the_reply_may_have_been_delivered() {
        let err = |kind| Err(AdapterError::new(kind, "x"));
        assert!(matches!(
            classify(&err(ErrorKind::TRANSIENT)),
            Sent::No { .. }
        ));
        assert!(matches!(
            classify(&Err(
                AdapterError::new(ErrorKind::RATE_LIMITED, "x").with_retry_after_ms(7000)
            )),
            Sent::No { retry_after } if retry_after == Duration::from_secs(7)
        ));
        assert!(matches!(classify(&err(ErrorKind::TIMEOUT)), Sent::Unknown));
        assert!(matches!(classify(&err(ErrorKind::PANICKED)), Sent::Unknown));
        assert!(matches!(
            classify(&err(ErrorKind::SHUT_DOWN)),
            Sent::Refused
        ));
        assert!(matches!(classify(&err(ErrorKind::PERMANENT)), Sent::Never));
        assert!(matches!(
            classify(&err(ErrorKind::INVALID_MESSAGE)),
            Sent::Never
        ));
        assert!(matches!(classify(&err(ErrorKind(200))), Sent::Never));
    }
}
