//! [`MessengerAdapter`]: the [`ChannelAdapter`] implementation.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use adapter_api::{
    abi_stable::std_types::{RResult, RStr, RString, RVec},
    catch_panic, AdapterError, CallCallbackBox, ChannelAdapter, ErrorKind, InboundEvent,
    OutboundMessage, SendCallbackBox, SendReceipt, Verdict, WebhookRequest,
};
use serde_json::Value;
use tokio::runtime::Runtime;

use crate::{
    error::{Error, Result},
    log::Log,
    ops,
    send::{graph::Graph, payload},
    settings::Settings,
    webhook,
};

/// One configured Messenger channel: settings, a small tokio runtime of its own and
/// one Graph client (one connection pool) shared by every send.
pub struct MessengerAdapter {
    settings: Arc<Settings>,
    graph: Arc<Graph>,
    runtime: Mutex<Option<Runtime>>,
    handle: tokio::runtime::Handle,
    in_flight: Arc<AtomicUsize>,
    closed: AtomicBool,
    log: Log,
}

impl MessengerAdapter {
    /// Builds an adapter from settings JSON.
    pub fn from_json(settings_json: &str, log: Log) -> Result<Self> {
        let settings = Settings::from_json(settings_json)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("messenger-adapter")
            .enable_all()
            .build()
            .map_err(|e| Error::Settings(format!("cannot start the adapter runtime: {e}")))?;
        let graph = Graph::new(settings.clone(), log.clone())?;
        log.info(|| {
            format!(
                "Messenger adapter ready: {} page(s), Graph API at {}/{}",
                settings.pages.len(),
                settings.graph_api_base,
                settings.graph_api_version
            )
        });
        Ok(Self {
            settings: Arc::new(settings),
            graph: Arc::new(graph),
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            closed: AtomicBool::new(false),
            log,
        })
    }

    /// Verifies a request (handshake or signature).
    pub fn verify_request(&self, request: &WebhookRequest<'_>) -> Verdict {
        webhook::verify::verify(&self.settings, request)
    }

    /// Parses an accepted request's body.
    pub fn parse_request(&self, request: &WebhookRequest<'_>) -> Result<Vec<InboundEvent>> {
        webhook::parse::parse(request.body.as_slice())
    }

    /// Sends `message` and calls `done` exactly once with the outcome.
    fn start_send(&self, message: OutboundMessage, done: Completion<SendReceipt>) {
        if self.closed.load(Ordering::Acquire) {
            return done.finish(Err(Error::ShutDown.into()));
        }
        let Some(page) = self.settings.page(&message.account_id).cloned() else {
            return done.finish(Err(Error::InvalidMessage(format!(
                "no access token is configured for page {:?}",
                message.account_id.as_str()
            ))
            .into()));
        };
        let requests = match payload::requests(&message) {
            Ok(requests) => requests,
            Err(err) => return done.finish(Err(err.into())),
        };
        let graph = Arc::clone(&self.graph);
        let log = self.log.clone();
        self.spawn(done, async move {
            let mut receipt = SendReceipt::default();
            // Parts go one after the other: a conversation's order is kept.
            for request in &requests {
                let (answer, attempts) = graph.send(&page, &request.body, request.media).await;
                receipt.attempts += attempts;
                let answer = match answer {
                    Ok(answer) => answer,
                    Err(err) => {
                        log.warn(|| format!("send as page {} failed: {err}", page.id));
                        return Err(with_attempts(err.into(), receipt.attempts));
                    }
                };
                receipt.parts += 1;
                receipt.recipient_id = text(&answer, "recipient_id").into();
                receipt.message_id = text(&answer, "message_id").into();
            }
            Ok::<_, AdapterError>(receipt)
        });
    }

    fn start_call(&self, op: &str, input: &str, done: Completion<RString>) {
        if self.closed.load(Ordering::Acquire) {
            return done.finish(Err(Error::ShutDown.into()));
        }
        let input: Value = if input.trim().is_empty() {
            Value::Null
        } else {
            match serde_json::from_str(input) {
                Ok(value) => value,
                Err(e) => {
                    return done.finish(Err(Error::InvalidMessage(format!(
                        "{op}: input is not JSON: {e}"
                    ))
                    .into()))
                }
            }
        };
        let (graph, settings, op) = (
            Arc::clone(&self.graph),
            Arc::clone(&self.settings),
            op.to_owned(),
        );
        self.spawn(done, async move {
            let answer = ops::run(&graph, &settings, &op, input)
                .await
                .map_err(AdapterError::from)?;
            Ok(RString::from(answer.to_string()))
        });
    }

    /// Runs `work` on the adapter's runtime and reports its outcome, a panic included,
    /// through `done`.
    fn spawn<T, F>(&self, done: Completion<T>, work: F)
    where
        T: Send + 'static,
        F: std::future::Future<Output = std::result::Result<T, AdapterError>> + Send + 'static,
    {
        let guard = InFlight::enter(&self.in_flight);
        let task = self.handle.spawn(work);
        self.handle.spawn(async move {
            let _guard = guard;
            let result = match task.await {
                Ok(result) => result,
                Err(join) if join.is_panic() => Err(AdapterError::new(
                    ErrorKind::PANICKED,
                    "the Messenger adapter panicked while sending",
                )),
                Err(_) => Err(Error::ShutDown.into()),
            };
            done.finish(result);
        });
    }

    /// Stops taking work, waits for in-flight work up to `deadline`, then stops the
    /// runtime (callbacks of unfinished work are completed with `SHUT_DOWN`).
    pub fn shutdown_within(&self, deadline: Duration) {
        self.closed.store(true, Ordering::Release);
        let end = Instant::now() + deadline;
        while self.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        let left = self.in_flight.load(Ordering::Acquire);
        if left > 0 {
            self.log
                .warn(|| format!("shutting down with {left} request(s) still in flight"));
        }
        let runtime = self.runtime.lock().ok().and_then(|mut r| r.take());
        if let Some(runtime) = runtime {
            runtime.shutdown_timeout(Duration::from_millis(200));
        }
    }
}

impl Drop for MessengerAdapter {
    /// The host may drop an adapter from one of its async threads, where blocking on
    /// the runtime's shutdown would panic (and a panic here would abort the host):
    /// stop it in the background instead. `shutdown` is the orderly way.
    fn drop(&mut self) {
        let runtime = match self.runtime.get_mut() {
            Ok(runtime) => runtime.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
}

/// Adds `"attempts"` to an error's details, for the host's retry metrics.
fn with_attempts(mut err: AdapterError, attempts: u32) -> AdapterError {
    let mut details = serde_json::from_str::<Value>(&err.details_json)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Default::default()));
    details["attempts"] = Value::from(attempts);
    err.details_json = details.to_string().into();
    err
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Counts work in flight for [`MessengerAdapter::shutdown_within`].
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A host callback that is called exactly once: with the result, or, if the work is
/// dropped unfinished (the runtime shut down), with `SHUT_DOWN`.
pub(crate) struct Completion<T: Send + 'static> {
    finish: Option<Finish<T>>,
}

type Finish<T> = Box<dyn FnOnce(RResult<T, AdapterError>) + Send>;

impl<T: Send + 'static> Completion<T> {
    fn new(finish: impl FnOnce(RResult<T, AdapterError>) + Send + 'static) -> Self {
        Self {
            finish: Some(Box::new(finish)),
        }
    }

    fn finish(mut self, result: std::result::Result<T, AdapterError>) {
        if let Some(finish) = self.finish.take() {
            finish(result.into());
        }
    }
}

impl<T: Send + 'static> Drop for Completion<T> {
    fn drop(&mut self) {
        if let Some(finish) = self.finish.take() {
            finish(RResult::RErr(Error::ShutDown.into()));
        }
    }
}

impl ChannelAdapter for MessengerAdapter {
    fn verify(&self, request: &WebhookRequest<'_>) -> Verdict {
        match catch_panic(|| RResult::ROk(self.verify_request(request))) {
            RResult::ROk(verdict) => verdict,
            RResult::RErr(err) => {
                self.log.error(|| format!("verify: {err}"));
                Verdict::Respond(adapter_api::WebhookResponse::text(500, "adapter failure"))
            }
        }
    }

    fn parse(&self, request: &WebhookRequest<'_>) -> RResult<RVec<InboundEvent>, AdapterError> {
        catch_panic(|| {
            self.parse_request(request)
                .map(RVec::from)
                .map_err(AdapterError::from)
                .into()
        })
    }

    fn send(&self, message: OutboundMessage, done: SendCallbackBox) {
        let completion = Completion::new(move |result| done.done(result));
        let outcome = catch_panic(|| {
            self.start_send(message, completion);
            RResult::ROk(())
        });
        if let RResult::RErr(err) = outcome {
            // The completion was dropped during the unwind and reported SHUT_DOWN;
            // log the real cause.
            self.log.error(|| format!("send: {err}"));
        }
    }

    fn call(&self, op: RStr<'_>, input_json: RStr<'_>, done: CallCallbackBox) {
        let completion = Completion::new(move |result| done.done(result));
        let outcome = catch_panic(|| {
            self.start_call(op.as_str(), input_json.as_str(), completion);
            RResult::ROk(())
        });
        if let RResult::RErr(err) = outcome {
            self.log.error(|| format!("call {op}: {err}"));
        }
    }

    fn shutdown(&self, deadline_ms: u64) {
        let outcome = catch_panic(|| {
            self.shutdown_within(Duration::from_millis(deadline_ms));
            RResult::ROk(())
        });
        if let RResult::RErr(err) = outcome {
            self.log.error(|| format!("shutdown: {err}"));
        }
    }
}
