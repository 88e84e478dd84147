//! [`LineChannel`]: the LINE [`Channel`].

use std::{future::Future, sync::Arc};

use adapter_api::{
    AdapterError, ErrorKind, InboundEvent, OutboundMessage, SendReceipt, Verdict, WebhookRequest,
};
use adapter_kit::{Channel, Log};
use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    error::{Error, Result},
    send::{self, Api, MAX_MESSAGES},
    settings::Settings,
    webhook,
};

/// One LINE Official Account.
pub struct LineChannel {
    settings: Arc<Settings>,
    api: Arc<Api>,
    log: Log,
}

impl LineChannel {
    /// Builds a channel from settings JSON.
    pub fn from_json(settings_json: &str, log: Log) -> Result<Self> {
        let settings = Settings::from_json(settings_json)?;
        let api = Api::new(settings.clone())?;
        log.info(|| format!("LINE adapter ready, API at {}", settings.api_base));
        Ok(Self {
            settings: Arc::new(settings),
            api: Arc::new(api),
            log,
        })
    }
}

impl Channel for LineChannel {
    fn verify(&self, request: &WebhookRequest<'_>) -> Verdict {
        webhook::verify(self.settings.channel_secret.expose(), request)
    }

    fn parse(
        &self,
        request: &WebhookRequest<'_>,
    ) -> std::result::Result<Vec<InboundEvent>, AdapterError> {
        webhook::parse(request.body.as_slice()).map_err(AdapterError::from)
    }

    fn send(
        &self,
        message: OutboundMessage,
    ) -> impl Future<Output = std::result::Result<SendReceipt, AdapterError>> + Send + 'static {
        let messages = send::messages(&message);
        let idempotency_key = send::idempotency_key(&message);
        let (api, log) = (Arc::clone(&self.api), self.log.clone());
        async move {
            let messages = messages?;
            let idempotency_key = idempotency_key?;
            let mut receipt = SendReceipt {
                recipient_id: message.recipient_id.clone(),
                ..SendReceipt::default()
            };
            let mut token = message
                .reply_token
                .as_ref()
                .into_option()
                .map(|t| t.to_string());
            let parts = messages.len().div_ceil(MAX_MESSAGES);
            for (part, chunk) in messages.chunks(MAX_MESSAGES).enumerate() {
                let retry_key = send::retry_key(idempotency_key.as_deref(), part);
                let to = message.recipient_id.as_str();
                let sent = send_part(&api, to, chunk, &retry_key, token.take(), &log).await;
                let (answer, attempts) = match sent {
                    Ok(sent) => sent,
                    Err(err) => return Err(partly_delivered(err.into(), part, parts)),
                };
                receipt.attempts += attempts;
                receipt.parts += 1;
                if let Some(id) = answer["sentMessages"]
                    .as_array()
                    .and_then(|m| m.last())
                    .and_then(|m| m["id"].as_str())
                {
                    receipt.message_id = id.into();
                }
            }
            Ok(receipt)
        }
    }

    fn call(
        &self,
        op: &str,
        input_json: &str,
    ) -> impl Future<Output = std::result::Result<String, AdapterError>> + Send + 'static {
        let api = Arc::clone(&self.api);
        let input: Value = serde_json::from_str(input_json).unwrap_or(Value::Null);
        let op = op.to_owned();
        async move {
            let answer = match op.as_str() {
                "ops" => {
                    json!({ "bot.info": "{} -> the bot's profile", "profile.get": "{user_id} -> a user's profile" })
                }
                "bot.info" => api.request(Method::GET, "/v2/bot/info", None, None).await?,
                "profile.get" => {
                    let Some(user) = input["user_id"]
                        .as_str()
                        .filter(|u| u.bytes().all(|b| b.is_ascii_alphanumeric()))
                    else {
                        return Err(Error::InvalidMessage(
                            "profile.get: user_id is required".to_owned(),
                        )
                        .into());
                    };
                    api.request(Method::GET, &format!("/v2/bot/profile/{user}"), None, None)
                        .await?
                }
                other => {
                    return Err(Error::Unsupported(format!(
                        "unknown operation {other:?}; see \"ops\""
                    ))
                    .into())
                }
            };
            Ok(answer.to_string())
        }
    }
}

/// Sends one part: as a reply when there is a `token`, as a push to `to` with
/// `retry_key` otherwise or when LINE refuses the token. The answer, and the
/// requests it took.
async fn send_part(
    api: &Api,
    to: &str,
    messages: &[Value],
    retry_key: &str,
    token: Option<String>,
    log: &Log,
) -> Result<(Value, u32)> {
    let mut attempts = 0;
    if let Some(token) = token {
        attempts += 1;
        match api.reply(&token, messages).await {
            Ok(answer) => return Ok((answer, attempts)),
            // An expired or used reply token: push instead.
            Err(Error::Api {
                status: 400,
                message: reason,
                ..
            }) => log.info(|| format!("reply token refused ({reason}); pushing instead")),
            Err(err) => return Err(err),
        }
    }
    let (answer, pushes) = api.push(to, messages, retry_key).await?;
    Ok((answer, attempts + pushes))
}

/// The error of part `failed` (from 0) of `total`. After the first part, the earlier
/// ones were delivered: an error that promises nothing was delivered (`TRANSIENT`,
/// `RATE_LIMITED`) becomes `TIMEOUT`, which hosts do not resend by default.
fn partly_delivered(mut err: AdapterError, failed: usize, total: usize) -> AdapterError {
    if failed == 0 || !matches!(err.kind, ErrorKind::TRANSIENT | ErrorKind::RATE_LIMITED) {
        return err;
    }
    err.kind = ErrorKind::TIMEOUT;
    err.message = format!(
        "part {} of {total} failed after {failed} part(s) were delivered: {}",
        failed + 1,
        err.message
    )
    .into();
    err
}
