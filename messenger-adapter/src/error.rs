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
    ///
    /// Unless `not_sent`, the request may have reached Meta and been carried out:
    /// its outcome is unknown ([`ErrorKind::TIMEOUT`] at the ABI edge).
    #[error("Graph API request failed: {message}")]
    Transport {
        /// What happened, without the request URL (which carries the access token).
        message: String,
        /// Whether the request is known not to have reached the server (the
        /// connection failed before it was written); only then is it
        /// [`ErrorKind::TRANSIENT`].
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
    ///
    /// Only a connect error (refused, unreachable, TLS or connect timeout) is known not
    /// to have sent anything; any later failure may come after Meta got the request.
    pub(crate) fn transport(err: reqwest::Error) -> Self {
        let not_sent = err.is_connect();
        let timed_out = err.is_timeout();
        Self::Transport {
            message: adapter_kit::error_chain(&err.without_url()),
            not_sent,
            timed_out,
        }
    }

    /// Whether the request may have reached Meta and been carried out: a transport
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

    /// The last error of a call one earlier try of which may have reached Meta: an
    /// unknown outcome, unless the last error already is one or is permanent.
    pub(crate) fn after_unknown_try(self) -> Self {
        let promised_not_sent = match &self {
            Self::Graph(graph) => graph.class != ErrorClass::Permanent,
            Self::Transport { not_sent, .. } => *not_sent,
            _ => false,
        };
        if !promised_not_sent {
            return self;
        }
        let timed_out = matches!(
            self,
            Self::Transport {
                timed_out: true,
                ..
            }
        );
        Self::Transport {
            message: format!("an earlier try may have been delivered; the last one failed: {self}"),
            not_sent: false,
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
            // Never sent: safe to try again. Anything else may have been delivered.
            Error::Transport { not_sent: true, .. } => Self::new(ErrorKind::TRANSIENT, message),
            Error::Transport { .. } => Self::new(ErrorKind::TIMEOUT, message),
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

#[cfg(test)]
mod tests {
    use reqwest::{header::HeaderMap, StatusCode};
    use serde_json::json;

    use super::*;
    use crate::send::graph::graph_error;

    fn transport(not_sent: bool, timed_out: bool) -> Error {
        Error::Transport {
            message: "connection closed".to_owned(),
            not_sent,
            timed_out,
        }
    }

    fn kind(err: Error) -> ErrorKind {
        AdapterError::from(err).kind
    }

    fn graph(status: u16, code: i64, subcode: i64) -> Error {
        let body = json!({ "error": { "code": code, "error_subcode": subcode } });
        let status = StatusCode::from_u16(status).unwrap();
        Error::Graph(Box::new(graph_error(
            status,
            &HeaderMap::new(),
            Some(&body),
        )))
    }

    #[test]
    fn a_request_that_was_never_sent_is_transient() {
        assert_eq!(kind(transport(true, false)), ErrorKind::TRANSIENT);
        // A connect timeout: nothing was written either.
        assert_eq!(kind(transport(true, true)), ErrorKind::TRANSIENT);
    }

    #[test]
    fn a_connection_lost_after_the_request_may_have_been_sent_is_an_unknown_outcome() {
        assert_eq!(kind(transport(false, false)), ErrorKind::TIMEOUT);
        assert_eq!(kind(transport(false, true)), ErrorKind::TIMEOUT);
    }

    #[test]
    fn graph_answers_that_promise_nothing_was_delivered_are_transient_or_rate_limited() {
        for (status, code) in [(500, 1200), (400, 2), (500, 0), (503, 0)] {
            assert_eq!(kind(graph(status, code, 0)), ErrorKind::TRANSIENT, "{code}");
        }
        for (status, code) in [(400, 4), (400, 17), (400, 32), (400, 613), (429, 0)] {
            let kind = kind(graph(status, code, 0));
            assert_eq!(kind, ErrorKind::RATE_LIMITED, "{status} {code}");
        }
    }

    #[test]
    fn permanent_graph_answers_are_permanent() {
        for (code, subcode) in [
            (551, 0),
            (10, 0),
            (100, 0),
            (190, 0),
            (200, 0),
            (299, 0),
            (368, 0),
            (2022, 0),
            (2, 2_018_344),
            (4, 2_018_354),
        ] {
            let kind = kind(graph(400, code, subcode));
            assert_eq!(kind, ErrorKind::PERMANENT, "{code}/{subcode}");
        }
    }

    #[test]
    fn a_retryable_last_error_after_a_try_that_may_have_arrived_is_an_unknown_outcome() {
        let err = graph(500, 1200, 0).after_unknown_try();
        assert!(err.may_have_arrived());
        assert!(err.to_string().contains("code 1200"), "{err}");
        assert_eq!(kind(err), ErrorKind::TIMEOUT);
        assert_eq!(
            kind(transport(true, false).after_unknown_try()),
            ErrorKind::TIMEOUT
        );
    }

    #[test]
    fn a_permanent_last_error_stays_permanent_after_a_try_that_may_have_arrived() {
        let err = graph(400, 551, 0).after_unknown_try();
        assert!(matches!(&err, Error::Graph(g) if g.code == 551));
        assert_eq!(kind(err), ErrorKind::PERMANENT);
    }
}
