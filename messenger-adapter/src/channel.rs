//! [`MessengerChannel`]: the Messenger [`Channel`]; `adapter-kit` turns it into the
//! plugin's FFI-safe adapter.

use std::{future::Future, sync::Arc};

use adapter_api::{
    AdapterError, ChannelAdapterBox, ErrorKind, InboundEvent, OutboundMessage, SendReceipt,
    Verdict, WebhookRequest,
};
use adapter_kit::{Channel, Log};
use serde_json::Value;

use crate::{
    error::{Error, Result},
    ops,
    send::{graph::Graph, payload},
    settings::Settings,
    webhook,
};

/// One configured Messenger channel: its settings and one Graph client (one
/// connection pool) shared by every send.
pub struct MessengerChannel {
    settings: Arc<Settings>,
    graph: Arc<Graph>,
    log: Log,
}

impl MessengerChannel {
    /// Builds a channel from settings JSON.
    pub fn from_json(settings_json: &str, log: Log) -> Result<Self> {
        let settings = Settings::from_json(settings_json)?;
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
}

/// The adapter the plugin exports, with its own runtime: what the host gets.
pub fn adapter(
    settings_json: &str,
    log: Log,
) -> std::result::Result<ChannelAdapterBox, AdapterError> {
    let channel = MessengerChannel::from_json(settings_json, log.clone())?;
    adapter_kit::export(channel, "messenger-adapter", 2, log)
}

impl Channel for MessengerChannel {
    fn verify(&self, request: &WebhookRequest<'_>) -> Verdict {
        self.verify_request(request)
    }

    fn parse(
        &self,
        request: &WebhookRequest<'_>,
    ) -> std::result::Result<Vec<InboundEvent>, AdapterError> {
        self.parse_request(request).map_err(AdapterError::from)
    }

    fn send(
        &self,
        message: OutboundMessage,
    ) -> impl Future<Output = std::result::Result<SendReceipt, AdapterError>> + Send + 'static {
        let page = self.settings.page(&message.account_id).cloned();
        let requests = payload::requests(&message);
        let (graph, log) = (Arc::clone(&self.graph), self.log.clone());
        async move {
            let Some(page) = page else {
                return Err(Error::InvalidMessage(format!(
                    "no access token is configured for page {:?}",
                    message.account_id.as_str()
                ))
                .into());
            };
            let requests = requests?;
            let mut receipt = SendReceipt::default();
            // Parts go one after the other: a conversation's order is kept.
            for request in &requests {
                let (answer, attempts) = graph.send(&page, &request.body, request.media).await;
                receipt.attempts += attempts;
                let answer = match answer {
                    Ok(answer) => answer,
                    Err(err) => {
                        log.warn(|| format!("send as page {} failed: {err}", page.id));
                        let err = partly_delivered(err.into(), receipt.parts, requests.len());
                        return Err(with_attempts(err, receipt.attempts));
                    }
                };
                receipt.parts += 1;
                receipt.recipient_id = text(&answer, "recipient_id").into();
                receipt.message_id = text(&answer, "message_id").into();
            }
            Ok(receipt)
        }
    }

    fn call(
        &self,
        op: &str,
        input_json: &str,
    ) -> impl Future<Output = std::result::Result<String, AdapterError>> + Send + 'static {
        let input: std::result::Result<Value, _> = if input_json.trim().is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_str(input_json)
        };
        let (graph, settings, op) = (
            Arc::clone(&self.graph),
            Arc::clone(&self.settings),
            op.to_owned(),
        );
        async move {
            let input = input
                .map_err(|e| Error::InvalidMessage(format!("{op}: input is not JSON: {e}")))?;
            let answer = ops::run(&graph, &settings, &op, input).await?;
            Ok(answer.to_string())
        }
    }
}

/// The error of a message after its first `sent` of `total` parts were delivered.
/// Sending the message again would deliver those twice, so after the first part an
/// error that promises nothing was delivered (`TRANSIENT`, `RATE_LIMITED`) becomes
/// `TIMEOUT`, which hosts do not resend by default.
fn partly_delivered(mut err: AdapterError, sent: u32, total: usize) -> AdapterError {
    if sent == 0 || !matches!(err.kind, ErrorKind::TRANSIENT | ErrorKind::RATE_LIMITED) {
        return err;
    }
    err.kind = ErrorKind::TIMEOUT;
    err.message = format!(
        "part {} of {total} failed after {sent} part(s) were delivered: {}",
        sent + 1,
        err.message
    )
    .into();
    err
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
