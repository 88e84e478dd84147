//! The plugin's one error type, and its conversion to the ABI's [`AdapterError`].

use adapter_api::{AdapterError, ErrorKind};

/// Everything that can go wrong in the LINE adapter. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The channel settings are unusable; the message names the key.
    #[error("invalid settings: {0}")]
    Settings(String),
    /// The webhook body is not a LINE webhook.
    #[error("bad webhook body: {0}")]
    BadRequest(String),
    /// The message cannot be expressed on LINE; nothing was sent.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// The operation is not known.
    #[error("{0}")]
    Unsupported(String),
    /// The LINE API answered with an error.
    #[error("LINE API error (HTTP {status}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// LINE's `message` and `details`.
        message: String,
        /// Whether trying again may help.
        retryable: bool,
        /// The `Retry-After` wait, in milliseconds, when given.
        retry_after_ms: u64,
    },
    /// No answer (refused, reset, timed out).
    ///
    /// Unless `not_sent`, the request may have reached LINE and been carried out: its
    /// outcome is unknown ([`ErrorKind::TIMEOUT`] at the ABI edge).
    #[error("LINE API request failed: {message}")]
    Transport {
        /// What happened.
        message: String,
        /// Whether it timed out.
        timed_out: bool,
        /// Whether the request is known not to have been sent (the connection failed
        /// before it was written); only then is it [`ErrorKind::TRANSIENT`].
        not_sent: bool,
    },
}

impl Error {
    /// Whether the request may have reached LINE and been carried out: a transport
    /// failure after the request may have been written.
    pub fn may_have_arrived(&self) -> bool {
        matches!(
            self,
            Self::Transport {
                not_sent: false,
                ..
            }
        )
    }

    /// The last error of a request one earlier try of which may have reached LINE: an
    /// unknown outcome, unless the last error already is one or is permanent.
    pub(crate) fn after_unknown_try(self) -> Self {
        let promised_not_sent = match &self {
            Self::Api { retryable, .. } => *retryable,
            Self::Transport { not_sent, .. } => *not_sent,
            _ => false,
        };
        if !promised_not_sent {
            return self;
        }
        Self::Transport {
            message: format!("an earlier try may have been delivered; the last one failed: {self}"),
            timed_out: false,
            not_sent: false,
        }
    }

    /// A transport error, with the request URL removed.
    ///
    /// Only a connect error (refused, unreachable, TLS or connect timeout) is known not
    /// to have sent anything; any later failure may come after LINE got the request.
    pub(crate) fn transport(err: reqwest::Error) -> Self {
        let (not_sent, timed_out) = (err.is_connect(), err.is_timeout());
        let message = adapter_kit::error_chain(&err.without_url());
        Self::Transport {
            message,
            timed_out,
            not_sent,
        }
    }
}

impl From<Error> for AdapterError {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::Settings(_) => Self::new(ErrorKind::INVALID_SETTINGS, message),
            Error::BadRequest(_) => Self::new(ErrorKind::BAD_REQUEST, message),
            Error::InvalidMessage(_) => Self::new(ErrorKind::INVALID_MESSAGE, message),
            Error::Unsupported(_) => Self::new(ErrorKind::UNSUPPORTED, message),
            // Never sent: safe to try again. Anything else may have been delivered.
            Error::Transport { not_sent: true, .. } => Self::new(ErrorKind::TRANSIENT, message),
            Error::Transport { .. } => Self::new(ErrorKind::TIMEOUT, message),
            Error::Api {
                status,
                retryable,
                retry_after_ms,
                ..
            } => {
                let kind = match (status, retryable) {
                    (429, _) => ErrorKind::RATE_LIMITED,
                    (_, true) => ErrorKind::TRANSIENT,
                    _ => ErrorKind::PERMANENT,
                };
                Self::new(kind, message)
                    .with_retry_after_ms(retry_after_ms)
                    .with_details_json(format!("{{\"http_status\":{status}}}"))
            }
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(not_sent: bool, timed_out: bool) -> Error {
        Error::Transport {
            message: "connection closed".to_owned(),
            timed_out,
            not_sent,
        }
    }

    fn api(status: u16, retry_after_ms: u64) -> Error {
        Error::Api {
            status,
            message: "scripted".to_owned(),
            retryable: status == 429 || status >= 500,
            retry_after_ms,
        }
    }

    #[test]
    fn a_request_that_was_never_sent_is_transient_even_after_a_connect_timeout() {
        let kinds =
            [transport(true, false), transport(true, true)].map(|e| AdapterError::from(e).kind);
        assert_eq!(kinds, [ErrorKind::TRANSIENT; 2]);
    }

    #[test]
    fn a_timeout_or_a_reset_after_sending_is_an_unknown_outcome() {
        let kinds =
            [transport(false, true), transport(false, false)].map(|e| AdapterError::from(e).kind);
        assert_eq!(kinds, [ErrorKind::TIMEOUT; 2]);
    }

    #[test]
    fn answers_are_classified_by_status() {
        let kind = |status| AdapterError::from(api(status, 0)).kind;
        assert_eq!(kind(500), ErrorKind::TRANSIENT);
        assert_eq!(kind(503), ErrorKind::TRANSIENT);
        assert_eq!(kind(400), ErrorKind::PERMANENT);
        assert_eq!(kind(403), ErrorKind::PERMANENT);
        let limited = AdapterError::from(api(429, 30_000));
        assert_eq!(
            (limited.kind, limited.retry_after_ms),
            (ErrorKind::RATE_LIMITED, 30_000)
        );
    }

    #[test]
    fn a_retryable_last_error_after_a_try_that_may_have_arrived_is_an_unknown_outcome() {
        let err = AdapterError::from(api(500, 0).after_unknown_try());
        assert_eq!(err.kind, ErrorKind::TIMEOUT);
        assert!(err.message.contains("HTTP 500"), "{err}");
        let permanent = AdapterError::from(api(400, 0).after_unknown_try());
        assert_eq!(permanent.kind, ErrorKind::PERMANENT);
    }
}
