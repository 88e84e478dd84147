//! Host side: a safe, async wrapper around a loaded adapter.

use std::{fmt, time::Duration};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RStr, RString, RVec},
};
use tokio::sync::oneshot;

use crate::{
    AdapterError, CallCallback, CallCallback_TO, ChannelAdapterBox, ErrorKind, InboundEvent,
    OutboundMessage, SendCallback, SendCallback_TO, SendReceipt, Verdict, WebhookRequest,
};

/// A loaded adapter with a Rust-friendly, async API. Cheap to share behind an `Arc`.
pub struct Adapter {
    inner: ChannelAdapterBox,
}

impl fmt::Debug for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adapter").finish_non_exhaustive()
    }
}

struct SendDone(oneshot::Sender<RResult<SendReceipt, AdapterError>>);

impl SendCallback for SendDone {
    fn done(self, result: RResult<SendReceipt, AdapterError>) {
        // The receiver is gone when the host stopped waiting (a timeout): nothing to do.
        let _ = self.0.send(result);
    }
}

struct CallDone(oneshot::Sender<RResult<RString, AdapterError>>);

impl CallCallback for CallDone {
    fn done(self, result: RResult<RString, AdapterError>) {
        let _ = self.0.send(result);
    }
}

/// The details of the error a host's own deadline gives: told apart from a plugin
/// that reported a `TIMEOUT` of its own (the channel's API not answering in time).
const HOST_DEADLINE: &str = r#"{"host_deadline":true}"#;

impl Adapter {
    /// Whether `err` is this wrapper's own deadline cutting off a plugin that never
    /// called back (a plugin failure), not a `TIMEOUT` the plugin reported.
    pub fn missed_deadline(err: &AdapterError) -> bool {
        err.kind == ErrorKind::TIMEOUT && err.details_json.as_str() == HOST_DEADLINE
    }

    /// Wraps an adapter created by [`LoadedPlugin::new_adapter`](crate::LoadedPlugin::new_adapter).
    pub fn new(inner: ChannelAdapterBox) -> Self {
        Self { inner }
    }

    /// See [`ChannelAdapter::verify`](crate::ChannelAdapter::verify).
    pub fn verify(&self, request: &WebhookRequest<'_>) -> Verdict {
        self.inner.verify(request)
    }

    /// See [`ChannelAdapter::parse`](crate::ChannelAdapter::parse). The events stay in
    /// the plugin's `RVec`: turning it into a `Vec` would copy it, since its buffer
    /// belongs to the plugin's allocator.
    pub fn parse(&self, request: &WebhookRequest<'_>) -> Result<RVec<InboundEvent>, AdapterError> {
        self.inner.parse(request).into_result()
    }

    /// Sends `message` and waits for the outcome, at most `timeout`.
    ///
    /// A plugin that never calls back yields [`ErrorKind::TIMEOUT`]; one that drops the
    /// callback without calling it yields [`ErrorKind::PANICKED`].
    pub async fn send(
        &self,
        message: OutboundMessage,
        timeout: Duration,
    ) -> Result<SendReceipt, AdapterError> {
        let (tx, rx) = oneshot::channel();
        self.inner.send(
            message,
            SendCallback_TO::from_value(SendDone(tx), TD_Opaque),
        );
        wait(rx, timeout, "send").await
    }

    /// Runs the channel operation `op` with a JSON input and waits for its JSON result,
    /// at most `timeout`.
    pub async fn call(
        &self,
        op: &str,
        input_json: &str,
        timeout: Duration,
    ) -> Result<String, AdapterError> {
        let (tx, rx) = oneshot::channel();
        self.inner.call(
            RStr::from(op),
            RStr::from(input_json),
            CallCallback_TO::from_value(CallDone(tx), TD_Opaque),
        );
        wait(rx, timeout, op).await.map(String::from)
    }

    /// See [`ChannelAdapter::shutdown`](crate::ChannelAdapter::shutdown). Blocks for up
    /// to `deadline`: call it from a blocking thread.
    pub fn shutdown(&self, deadline: Duration) {
        self.inner
            .shutdown(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX));
    }
}

async fn wait<T>(
    rx: oneshot::Receiver<RResult<T, AdapterError>>,
    timeout: Duration,
    what: &str,
) -> Result<T, AdapterError> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(result)) => result.into_result(),
        Ok(Err(_)) => Err(AdapterError::new(
            ErrorKind::PANICKED,
            format!("the plugin dropped the {what} callback without calling it"),
        )),
        Err(_) => Err(AdapterError::new(
            ErrorKind::TIMEOUT,
            format!("the plugin did not complete {what} within {timeout:?}"),
        )
        .with_details_json(HOST_DEADLINE)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use abi_stable::std_types::RBox;

    use super::*;
    use crate::{CallCallbackBox, ChannelAdapter, ChannelAdapter_TO, SendCallbackBox};

    /// An adapter whose sends never call back: it keeps their callbacks, unanswered.
    #[derive(Default)]
    struct Silent {
        kept: Mutex<Vec<SendCallbackBox>>,
    }

    impl ChannelAdapter for Silent {
        fn verify(&self, _: &WebhookRequest<'_>) -> Verdict {
            Verdict::Accept
        }
        fn parse(&self, _: &WebhookRequest<'_>) -> RResult<RVec<InboundEvent>, AdapterError> {
            RResult::ROk(RVec::new())
        }
        fn send(&self, _: OutboundMessage, done: SendCallbackBox) {
            self.kept.lock().unwrap().push(done);
        }
        fn call(&self, _: RStr<'_>, _: RStr<'_>, _: CallCallbackBox) {}
        fn shutdown(&self, _: u64) {}
    }

    #[tokio::test]
    async fn only_the_wrappers_own_deadline_counts_as_a_missed_deadline() {
        let silent: ChannelAdapter_TO<RBox<()>> =
            ChannelAdapter_TO::from_value(Silent::default(), TD_Opaque);
        let adapter = Adapter::new(silent);
        let cut_off = adapter
            .send(
                OutboundMessage::text("p", "u", "hi"),
                Duration::from_millis(1),
            )
            .await
            .unwrap_err();
        assert_eq!(cut_off.kind, ErrorKind::TIMEOUT);
        assert!(Adapter::missed_deadline(&cut_off), "{cut_off}");
        // A TIMEOUT the plugin reports (the channel's API did not answer) is not.
        let reported = AdapterError::new(ErrorKind::TIMEOUT, "the API did not answer");
        assert!(!Adapter::missed_deadline(&reported));
    }
}
