//! A host callback that is called exactly once.

use adapter_api::{
    abi_stable::std_types::{RResult, RString},
    AdapterError, CallCallbackBox, ErrorKind, SendCallbackBox, SendReceipt,
};

type Finish<T> = Box<dyn FnOnce(RResult<T, AdapterError>) + Send>;

/// Calls the host back exactly once: with [`Completion::finish`]'s result, or, if it is
/// dropped unfinished (the runtime stopped, a task was cancelled), with `TIMEOUT`: the
/// work may have taken effect (a request may have reached the channel), so the host
/// must not take it for work never done.
pub struct Completion<T: Send + 'static> {
    finish: Option<Finish<T>>,
}

impl<T: Send + 'static> Completion<T> {
    /// Wraps a callback.
    pub fn new(finish: impl FnOnce(RResult<T, AdapterError>) + Send + 'static) -> Self {
        Self {
            finish: Some(Box::new(finish)),
        }
    }

    /// Calls the host back with `result`.
    pub fn finish(mut self, result: Result<T, AdapterError>) {
        if let Some(finish) = self.finish.take() {
            finish(result.into());
        }
    }
}

impl Completion<SendReceipt> {
    /// The completion of a `send`.
    pub fn of_send(done: SendCallbackBox) -> Self {
        Self::new(move |result| done.done(result))
    }
}

impl Completion<RString> {
    /// The completion of a `call`.
    pub fn of_call(done: CallCallbackBox) -> Self {
        Self::new(move |result| done.done(result))
    }
}

impl<T: Send + 'static> Drop for Completion<T> {
    fn drop(&mut self) {
        if let Some(finish) = self.finish.take() {
            finish(RResult::RErr(AdapterError::new(
                ErrorKind::TIMEOUT,
                "the adapter stopped before the work finished; it may have taken effect",
            )));
        }
    }
}
