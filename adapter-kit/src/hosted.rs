//! [`Channel`]: what a plugin author implements; [`export`]: the ABI glue around it.

use std::{future::Future, sync::Arc, time::Duration};

use adapter_api::{
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RResult, RStr, RString, RVec},
    },
    catch_panic, AdapterError, CallCallbackBox, ChannelAdapter, ChannelAdapterBox,
    ChannelAdapter_TO, HostServicesBox, InboundEvent, OutboundMessage, SendCallbackBox,
    SendReceipt, Verdict, WebhookRequest, WebhookResponse,
};

use crate::{Completion, Executor, Log};

/// A channel, in plain Rust. [`export`] makes it a plugin's adapter.
pub trait Channel: Send + Sync + 'static {
    /// Decides whether a request is authentic, or answers it (a handshake, a bad
    /// signature). Runs on the host's request path: no network, no blocking.
    fn verify(&self, request: &WebhookRequest<'_>) -> Verdict;

    /// Turns an accepted body into events, in order.
    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<InboundEvent>, AdapterError>;

    /// Sends a message. The future runs on the plugin's runtime.
    fn send(
        &self,
        message: OutboundMessage,
    ) -> impl Future<Output = Result<SendReceipt, AdapterError>> + Send + 'static;

    /// Runs a channel operation with a JSON input; returns its JSON result.
    fn call(
        &self,
        op: &str,
        input_json: &str,
    ) -> impl Future<Output = Result<String, AdapterError>> + Send + 'static;
}

/// A [`Channel`] with its runtime: implements the ABI's [`ChannelAdapter`].
struct Hosted<C> {
    channel: Arc<C>,
    executor: Executor,
    log: Log,
}

/// Wraps `channel` into the adapter a plugin's constructor returns, with a runtime of
/// `workers` threads named `name`.
pub fn export<C: Channel>(
    channel: C,
    name: &str,
    workers: usize,
    log: Log,
) -> Result<ChannelAdapterBox, AdapterError> {
    let executor = Executor::new(name, workers)?;
    Ok(ChannelAdapter_TO::from_value(
        Hosted {
            channel: Arc::new(channel),
            executor,
            log,
        },
        TD_Opaque,
    ))
}

/// The body of a plugin's `new_adapter`: builds the channel from its settings JSON
/// and exports it, with panics and errors turned into an `RErr`.
pub fn new_adapter<C, F>(
    settings_json: RStr<'_>,
    host: HostServicesBox,
    target: &'static str,
    build: F,
) -> RResult<ChannelAdapterBox, AdapterError>
where
    C: Channel,
    F: FnOnce(&str, Log) -> Result<C, AdapterError>,
{
    catch_panic(|| {
        let log = Log::to_host(host, target);
        build(settings_json.as_str(), log.clone())
            .and_then(|channel| export(channel, target, default_workers(), log))
            .into()
    })
}

/// The log record of a request `verify` refused: the status and the channel's
/// reason, its response body when that is text (first line, at most 200
/// characters). So a wrong verify token and a wrong signature read differently in
/// the host's log; the body is what the caller was told, so it holds no secret.
fn refusal_record(response: &WebhookResponse) -> String {
    let status = response.status;
    let is_text = response.content_type.as_str().starts_with("text/");
    let reason = std::str::from_utf8(&response.body)
        .ok()
        .filter(|_| is_text)
        .and_then(|text| text.lines().next())
        .map(str::trim)
        .filter(|line| !line.is_empty());
    match reason {
        Some(line) if line.chars().count() > 200 => {
            let cut: String = line.chars().take(200).collect();
            format!("webhook refused ({status}): {cut}...")
        }
        Some(line) => format!("webhook refused ({status}): {line}"),
        None => format!("webhook refused ({status})"),
    }
}

/// Two runtime threads, or one when the process may use a single CPU (a pinned host
/// gains nothing from a second thread but context switches).
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(2))
}

impl<C: Channel> ChannelAdapter for Hosted<C> {
    fn verify(&self, request: &WebhookRequest<'_>) -> Verdict {
        match catch_panic(|| RResult::ROk(self.channel.verify(request))) {
            RResult::ROk(verdict) => {
                if let Verdict::Respond(response) = &verdict {
                    if (400..500).contains(&response.status) {
                        self.log.info(|| refusal_record(response));
                    }
                }
                verdict
            }
            RResult::RErr(err) => {
                self.log.error(|| format!("verify: {err}"));
                Verdict::Respond(WebhookResponse::text(500, "adapter failure"))
            }
        }
    }

    fn parse(&self, request: &WebhookRequest<'_>) -> RResult<RVec<InboundEvent>, AdapterError> {
        catch_panic(|| self.channel.parse(request).map(RVec::from).into())
    }

    fn send(&self, message: OutboundMessage, done: SendCallbackBox) {
        let done = Completion::of_send(done);
        // Building the future runs plugin code too: a panic there drops `done`,
        // which reports TIMEOUT; log the real cause.
        if let RResult::RErr(err) = catch_panic(|| {
            self.executor.run(done, self.channel.send(message));
            RResult::ROk(())
        }) {
            self.log.error(|| format!("send: {err}"));
        }
    }

    fn call(&self, op: RStr<'_>, input_json: RStr<'_>, done: CallCallbackBox) {
        let done = Completion::of_call(done);
        if let RResult::RErr(err) = catch_panic(|| {
            let work = self.channel.call(op.as_str(), input_json.as_str());
            self.executor
                .run(done, async move { work.await.map(RString::from) });
            RResult::ROk(())
        }) {
            self.log.error(|| format!("call {op}: {err}"));
        }
    }

    fn shutdown(&self, deadline_ms: u64) {
        if let RResult::RErr(err) = catch_panic(|| {
            let left = self.executor.shutdown(Duration::from_millis(deadline_ms));
            if left > 0 {
                self.log
                    .warn(|| format!("shut down with {left} request(s) unfinished"));
            }
            RResult::ROk(())
        }) {
            self.log.error(|| format!("shutdown: {err}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use adapter_api::{
        abi_stable::std_types::RSlice, Adapter, ErrorKind, HostServices, HostServices_TO, LogLevel,
    };

    use super::*;

    /// A channel whose every entry point panics, or hangs, on request.
    struct Faulty;

    /// Sends of "hang" that have started.
    static HANGING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    // The trait's futures are 'static; an `async fn` would borrow `self`.
    #[allow(clippy::manual_async_fn)]
    impl Channel for Faulty {
        fn verify(&self, _: &WebhookRequest<'_>) -> Verdict {
            panic!("verify exploded")
        }

        fn parse(&self, _: &WebhookRequest<'_>) -> Result<Vec<InboundEvent>, AdapterError> {
            panic!("parse exploded")
        }

        fn send(
            &self,
            message: OutboundMessage,
        ) -> impl Future<Output = Result<SendReceipt, AdapterError>> + Send + 'static {
            async move {
                match message.text.as_ref().into_option().map(|t| t.as_str()) {
                    Some("panic") => panic!("send exploded"),
                    Some("hang") => {
                        HANGING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        unreachable!()
                    }
                    _ => Ok(SendReceipt::default()),
                }
            }
        }

        fn call(
            &self,
            op: &str,
            _: &str,
        ) -> impl Future<Output = Result<String, AdapterError>> + Send + 'static {
            if op == "panic-now" {
                panic!("call exploded before its future");
            }
            async { Ok("{}".to_owned()) }
        }
    }

    fn request() -> WebhookRequest<'static> {
        WebhookRequest {
            method: "POST".into(),
            path: "/".into(),
            query: "".into(),
            headers: RSlice::from_slice(&[]),
            body: RSlice::from_slice(b"{}"),
        }
    }

    fn adapter() -> Adapter {
        Adapter::new(export(Faulty, "faulty", 1, Log::default()).unwrap())
    }

    #[test]
    fn panics_in_verify_and_parse_become_a_500_and_an_error() {
        let adapter = adapter();
        match adapter.verify(&request()) {
            Verdict::Respond(response) => assert_eq!(response.status, 500),
            Verdict::Accept => panic!("accepted"),
        }
        let err = adapter.parse(&request()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::PANICKED);
        assert!(err.message.contains("parse exploded"), "{err}");
    }

    #[tokio::test]
    async fn panics_in_sends_and_calls_complete_their_callbacks() {
        let adapter = adapter();
        let timeout = Duration::from_secs(5);
        let panicked = OutboundMessage::text("a", "b", "panic");
        let err = adapter.send(panicked, timeout).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::PANICKED);
        assert!(err.message.contains("send exploded"), "{err}");
        let err = adapter.call("panic-now", "{}", timeout).await.unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::TIMEOUT,
            "the dropped completion still answers"
        );
        assert_eq!(adapter.call("fine", "{}", timeout).await.unwrap(), "{}");
        assert!(adapter
            .send(OutboundMessage::text("a", "b", "ok"), timeout)
            .await
            .is_ok());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn shutdown_completes_hung_work_and_refuses_new_work() {
        let adapter = std::sync::Arc::new(adapter());
        let hung = {
            let adapter = std::sync::Arc::clone(&adapter);
            tokio::spawn(async move {
                adapter
                    .send(
                        OutboundMessage::text("a", "b", "hang"),
                        Duration::from_secs(30),
                    )
                    .await
            })
        };
        // The send has started on the plugin's runtime: shutdown finds it in flight.
        while HANGING.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let closing = std::sync::Arc::clone(&adapter);
        tokio::task::spawn_blocking(move || closing.shutdown(Duration::from_millis(50)))
            .await
            .unwrap();
        // Cut off under way: perhaps done, never "not done".
        assert_eq!(hung.await.unwrap().unwrap_err().kind, ErrorKind::TIMEOUT);
        let late = adapter
            .send(
                OutboundMessage::text("a", "b", "ok"),
                Duration::from_secs(1),
            )
            .await;
        assert_eq!(late.unwrap_err().kind, ErrorKind::SHUT_DOWN);
    }

    /// A channel that refuses every request with the answer it was given.
    struct Refusing(WebhookResponse);

    #[allow(clippy::manual_async_fn)]
    impl Channel for Refusing {
        fn verify(&self, _: &WebhookRequest<'_>) -> Verdict {
            Verdict::Respond(self.0.clone())
        }

        fn parse(&self, _: &WebhookRequest<'_>) -> Result<Vec<InboundEvent>, AdapterError> {
            Ok(Vec::new())
        }

        fn send(
            &self,
            _: OutboundMessage,
        ) -> impl Future<Output = Result<SendReceipt, AdapterError>> + Send + 'static {
            async { Ok(SendReceipt::default()) }
        }

        fn call(
            &self,
            _: &str,
            _: &str,
        ) -> impl Future<Output = Result<String, AdapterError>> + Send + 'static {
            async { Ok("{}".to_owned()) }
        }
    }

    /// Host services that keep every record at info or above.
    #[derive(Clone, Default)]
    struct Records(std::sync::Arc<std::sync::Mutex<Vec<(LogLevel, String)>>>);

    impl HostServices for Records {
        fn log_enabled(&self, level: LogLevel) -> bool {
            level >= LogLevel::Info
        }

        fn log(&self, level: LogLevel, _: RStr<'_>, message: RStr<'_>) {
            self.0.lock().unwrap().push((level, message.to_string()));
        }
    }

    /// What verifying one request with a channel answering `response` logs.
    fn logged_refusal(response: WebhookResponse) -> Vec<(LogLevel, String)> {
        let records = Records::default();
        let host = HostServices_TO::from_value(records.clone(), TD_Opaque);
        let log = Log::to_host(host, "refusing");
        let adapter = Adapter::new(export(Refusing(response), "refusing", 1, log).unwrap());
        adapter.verify(&request());
        let logged = records.0.lock().unwrap().clone();
        logged
    }

    #[test]
    fn a_refused_request_is_logged_at_info_with_the_reason_it_was_given() {
        let token = logged_refusal(WebhookResponse::text(
            403,
            "the verify token does not match",
        ));
        let signature = logged_refusal(WebhookResponse::text(403, "signature does not match"));
        assert_eq!(
            token,
            [(
                LogLevel::Info,
                "webhook refused (403): the verify token does not match".to_owned()
            )]
        );
        assert_eq!(
            signature,
            [(
                LogLevel::Info,
                "webhook refused (403): signature does not match".to_owned()
            )]
        );
    }

    #[test]
    fn a_refusal_logs_only_the_first_line_of_a_text_body_and_no_other_body() {
        let long = format!("{}\nsecond line", "x".repeat(300));
        let logged = logged_refusal(WebhookResponse::text(401, long));
        assert_eq!(
            logged[0].1,
            format!("webhook refused (401): {}...", "x".repeat(200))
        );
        let mut binary = WebhookResponse::text(400, "not shown");
        binary.content_type = "application/json".into();
        assert_eq!(logged_refusal(binary)[0].1, "webhook refused (400)");
    }

    #[test]
    fn answers_that_are_not_refusals_are_not_logged() {
        assert!(logged_refusal(WebhookResponse::text(200, "challenge")).is_empty());
        assert!(logged_refusal(WebhookResponse::text(500, "adapter failure")).is_empty());
    }

    #[tokio::test]
    async fn dropping_an_adapter_on_an_async_runtime_thread_does_not_panic() {
        // Dropping a tokio runtime from inside another one panics unless the adapter
        // takes care to shut its runtime down elsewhere.
        let adapter = adapter();
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            drop(adapter);
        }));
        assert!(dropped.is_ok(), "dropping the adapter panicked");
    }
}
