//! [`EchoChannel`]: the echo platform as an [`adapter_kit::Channel`].

use std::{future::Future, sync::Arc};

use adapter_api::{
    AdapterError, ErrorKind, InboundEvent, OutboundMessage, SendReceipt, Verdict, WebhookRequest,
};
use adapter_kit::{Channel, Log, Secret};
use serde_json::{json, Value};

use crate::{send::Sender, settings::Settings, webhook};

/// One configured echo channel.
pub struct EchoChannel {
    secret: Secret,
    sender: Arc<Sender>,
    log: Log,
}

impl EchoChannel {
    /// Builds the channel from its settings JSON; `log` writes to the host's log.
    pub fn from_json(settings_json: &str, log: Log) -> Result<Self, AdapterError> {
        let settings = Settings::from_json(settings_json)?;
        let sender = Sender::new(&settings)?;
        log.info(|| "echo adapter ready".to_owned());
        Ok(Self {
            secret: settings.secret,
            sender: Arc::new(sender),
            log,
        })
    }
}

impl Channel for EchoChannel {
    fn verify(&self, request: &WebhookRequest<'_>) -> Verdict {
        webhook::verify(&self.secret, request)
    }

    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<InboundEvent>, AdapterError> {
        webhook::parse(request.body.as_slice())
    }

    fn send(
        &self,
        message: OutboundMessage,
    ) -> impl Future<Output = Result<SendReceipt, AdapterError>> + Send + 'static {
        let sending = self.sender.send(&message);
        let log = self.log.clone();
        async move {
            let result = sending.await;
            if let Err(err) = &result {
                log.debug(|| format!("reply not sent: {err}"));
            }
            result
        }
    }

    fn call(
        &self,
        op: &str,
        input_json: &str,
    ) -> impl Future<Output = Result<String, AdapterError>> + Send + 'static {
        let answer = match op {
            "ops" => Ok(json!({ "echo": "{...} -> the same object" }).to_string()),
            "echo" => match serde_json::from_str::<Value>(input_json) {
                Ok(input) if input.is_object() => Ok(input.to_string()),
                _ => Err(AdapterError::new(
                    ErrorKind::INVALID_MESSAGE,
                    "echo: the input must be a JSON object",
                )),
            },
            other => Err(AdapterError::new(
                ErrorKind::UNSUPPORTED,
                format!("unknown operation {other:?}; see \"ops\""),
            )),
        };
        async move { answer }
    }
}
