//! The error type that crosses the plugin boundary.

use std::{
    fmt,
    panic::{catch_unwind, AssertUnwindSafe},
};

use abi_stable::{
    std_types::{RResult, RString},
    StableAbi,
};

/// What kind of failure an [`AdapterError`] is.
///
/// A `u8` newtype rather than an enum so that later minor versions can add kinds
/// without breaking the layout; unknown values must be treated like
/// [`ErrorKind::PERMANENT`].
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorKind(pub u8);

impl ErrorKind {
    /// The adapter's settings are missing a value or have a wrong one.
    pub const INVALID_SETTINGS: Self = Self(1);
    /// The incoming request is not a webhook this adapter understands (HTTP 400).
    pub const BAD_REQUEST: Self = Self(2);
    /// The incoming request is not authentic (HTTP 401/403).
    pub const UNAUTHORIZED: Self = Self(3);
    /// The remote API asked us to slow down; see [`AdapterError::retry_after_ms`].
    ///
    /// From `send`, a promise that the message was **not** delivered: trying it again
    /// later, after the wait, cannot deliver it twice.
    pub const RATE_LIMITED: Self = Self(4);
    /// A failure that may succeed if tried again later.
    ///
    /// From `send`, a promise that the message was **not** delivered (the connection
    /// failed before the request was written, or the channel answered that it did not
    /// take it, e.g. an HTTP 5xx): the host may try it again later, even after a
    /// restart. A failure after which the message may have arrived is
    /// [`ErrorKind::TIMEOUT`] instead; so is a message of several parts whose first
    /// parts were delivered.
    pub const TRANSIENT: Self = Self(5);
    /// A failure that will not succeed if tried again.
    pub const PERMANENT: Self = Self(6);
    /// The plugin panicked; the adapter should be considered broken.
    pub const PANICKED: Self = Self(7);
    /// The operation did not finish in time, or its outcome is otherwise unknown.
    ///
    /// From `send`: the request may have reached the channel (no answer in time, the
    /// connection reset after the request was sent, a batch left the call
    /// unanswered), so the message **may have been delivered**. A message of several
    /// parts that failed after its first parts were delivered is reported as this
    /// kind too. Hosts do not send it again by default: doing so risks a duplicate.
    pub const TIMEOUT: Self = Self(8);
    /// The outbound message or operation input is invalid; nothing was sent.
    pub const INVALID_MESSAGE: Self = Self(9);
    /// The operation named in a generic call is not known to this adapter.
    pub const UNSUPPORTED: Self = Self(10);
    /// The adapter is shutting down and takes no new work: from `send`, a promise
    /// that the message was **not** sent. Work cut off under way by a shutdown is
    /// [`ErrorKind::TIMEOUT`] instead: it may have reached the channel.
    pub const SHUT_DOWN: Self = Self(11);

    /// A short lower-case name, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::INVALID_SETTINGS => "invalid_settings",
            Self::BAD_REQUEST => "bad_request",
            Self::UNAUTHORIZED => "unauthorized",
            Self::RATE_LIMITED => "rate_limited",
            Self::TRANSIENT => "transient",
            Self::PERMANENT => "permanent",
            Self::PANICKED => "panicked",
            Self::TIMEOUT => "timeout",
            Self::INVALID_MESSAGE => "invalid_message",
            Self::UNSUPPORTED => "unsupported",
            Self::SHUT_DOWN => "shut_down",
            _ => "unknown",
        }
    }
}

impl fmt::Debug for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error returned by a plugin. Never carries a secret.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct AdapterError {
    /// The kind of failure.
    pub kind: ErrorKind,
    /// A one-line, human-readable description.
    pub message: RString,
    /// How long to wait before trying again, in milliseconds; 0 when not known.
    pub retry_after_ms: u64,
    /// Channel-specific details as a JSON object (for Messenger: `code`,
    /// `error_subcode`, `fbtrace_id`); empty when there are none.
    pub details_json: RString,
}

impl AdapterError {
    /// An error of `kind` with a message and no details.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: RString::from(message.into()),
            retry_after_ms: 0,
            details_json: RString::new(),
        }
    }

    /// Sets [`Self::retry_after_ms`].
    #[must_use]
    pub fn with_retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_ms = ms;
        self
    }

    /// Sets [`Self::details_json`].
    #[must_use]
    pub fn with_details_json(mut self, json: impl Into<String>) -> Self {
        self.details_json = RString::from(json.into());
        self
    }

    /// Whether trying again later may succeed: [`ErrorKind::TRANSIENT`],
    /// [`ErrorKind::RATE_LIMITED`] or [`ErrorKind::TIMEOUT`].
    ///
    /// This does not say that trying again is safe. After a `TIMEOUT` the message may
    /// already have been delivered, so a host that must not deliver a message twice
    /// resends only `TRANSIENT` and `RATE_LIMITED` (after [`Self::retry_after_ms`]).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::TRANSIENT | ErrorKind::RATE_LIMITED | ErrorKind::TIMEOUT
        )
    }
}

impl fmt::Display for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for AdapterError {}

/// Runs `f`, turning a panic into an [`ErrorKind::PANICKED`] error.
///
/// Every plugin entry point must run its body through this (or its own
/// `catch_unwind`): a panic that reaches an `abi_stable` shim aborts the host.
pub fn catch_panic<T>(f: impl FnOnce() -> RResult<T, AdapterError>) -> RResult<T, AdapterError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => RResult::RErr(AdapterError::new(
            ErrorKind::PANICKED,
            format!("plugin panicked: {}", panic_message(panic.as_ref())),
        )),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_panic_turns_a_panic_into_an_error() {
        let result: RResult<(), AdapterError> = catch_panic(|| panic!("boom {}", 42));
        let err = result.unwrap_err();
        assert_eq!(err.kind, ErrorKind::PANICKED);
        assert!(err.message.contains("boom 42"), "{}", err.message);
    }

    #[test]
    fn catch_panic_passes_results_through() {
        assert_eq!(
            catch_panic(|| RResult::ROk::<_, AdapterError>(7)).unwrap(),
            7
        );
    }

    #[test]
    fn unknown_kinds_have_a_name() {
        assert_eq!(ErrorKind(200).name(), "unknown");
        assert_eq!(format!("{:?}", ErrorKind::RATE_LIMITED), "rate_limited(4)");
    }
}
