//! The plugin's one error type, and its conversion to the ABI's [`AdapterError`].

use adapter_api::{AdapterError, ErrorKind};

/// Everything that can go wrong in the Messenger adapter. No variant carries a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The channel settings are unusable; the message names the key.
    #[error("invalid settings: {0}")]
    Settings(String),
    /// The webhook body is not a Messenger webhook.
    #[error("bad webhook body: {0}")]
    BadRequest(String),
    /// The outbound message cannot be expressed on Messenger; nothing was sent.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// The Graph API answered with an error object.
    #[error("{}", graph_summary(.0))]
    Graph(Box<GraphError>),
    /// The request never got an answer (connection refused, reset, timed out).
    #[error("Graph API request failed: {message}")]
    Transport {
        /// What happened, without the request URL (which carries the access token).
        message: String,
        /// Whether the request is known not to have reached the server.
        not_sent: bool,
        /// Whether it timed out waiting for an answer.
        timed_out: bool,
    },
    /// The operation named in a generic call is not known.
    #[error("{0}")]
    Unsupported(String),
}

/// A Graph API error answer, classified for retrying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    /// HTTP status of the answer.
    pub http_status: u16,
    /// Graph `error.code`, 0 when absent.
    pub code: i64,
    /// Graph `error.error_subcode`, 0 when absent.
    pub subcode: i64,
    /// Graph `error.message`.
    pub message: String,
    /// Graph `error.fbtrace_id`, for Meta support.
    pub fbtrace_id: String,
    /// Graph `error.is_transient`.
    pub is_transient: bool,
    /// How to treat it.
    pub class: ErrorClass,
    /// How long the Graph API asks us to wait, from the usage headers (milliseconds).
    pub retry_after_ms: u64,
}

/// How a Graph error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again after a backoff.
    Transient,
    /// Try again after the rate limit clears.
    RateLimited,
    /// Do not try again.
    Permanent,
}

fn graph_summary(e: &GraphError) -> String {
    format!(
        "Graph API error (HTTP {}, code {}, subcode {}): {} [fbtrace_id {}]",
        e.http_status, e.code, e.subcode, e.message, e.fbtrace_id
    )
}

impl Error {
    /// A transport error from reqwest, with the URL (and so the token) removed.
    pub(crate) fn transport(err: reqwest::Error) -> Self {
        let not_sent = err.is_connect();
        let timed_out = err.is_timeout();
        Self::Transport {
            message: adapter_kit::error_chain(&err.without_url()),
            not_sent,
            timed_out,
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
            Error::Transport { timed_out, .. } => Self::new(
                if timed_out {
                    ErrorKind::TIMEOUT
                } else {
                    ErrorKind::TRANSIENT
                },
                message,
            ),
            Error::Graph(graph) => {
                let kind = match graph.class {
                    ErrorClass::Transient => ErrorKind::TRANSIENT,
                    ErrorClass::RateLimited => ErrorKind::RATE_LIMITED,
                    ErrorClass::Permanent => ErrorKind::PERMANENT,
                };
                let details = serde_json::json!({
                    "http_status": graph.http_status,
                    "code": graph.code,
                    "error_subcode": graph.subcode,
                    "fbtrace_id": graph.fbtrace_id,
                });
                Self::new(kind, message)
                    .with_retry_after_ms(graph.retry_after_ms)
                    .with_details_json(details.to_string())
            }
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
