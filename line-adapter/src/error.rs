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
    #[error("LINE API request failed: {message}")]
    Transport {
        /// What happened.
        message: String,
        /// Whether it timed out.
        timed_out: bool,
        /// Whether the request is known not to have been sent.
        not_sent: bool,
    },
}

impl Error {
    /// A transport error, with the request URL removed.
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
            Error::Transport {
                timed_out: true, ..
            } => Self::new(ErrorKind::TIMEOUT, message),
            Error::Transport { .. } => Self::new(ErrorKind::TRANSIENT, message),
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
