//! [`LineChannel`]: the LINE [`Channel`].

use std::{future::Future, sync::Arc};

use adapter_api::{
    AdapterError, InboundEvent, OutboundMessage, SendReceipt, Verdict, WebhookRequest,
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
        let (api, log) = (Arc::clone(&self.api), self.log.clone());
        async move {
            let messages = messages?;
            let mut receipt = SendReceipt {
                recipient_id: message.recipient_id.clone(),
                ..SendReceipt::default()
            };
            let mut token = message
                .reply_token
                .as_ref()
                .into_option()
                .map(|t| t.to_string());
            for chunk in messages.chunks(MAX_MESSAGES) {
                let answer = match token.take() {
                    Some(token) => match api.reply(&token, chunk).await {
                        Ok(answer) => {
                            receipt.attempts += 1;
                            answer
                        }
                        // An expired or used reply token: push instead.
                        Err(Error::Api {
                            status: 400,
                            message: reason,
                            ..
                        }) => {
                            log.info(|| format!("reply token refused ({reason}); pushing instead"));
                            let (answer, attempts) = api.push(&message.recipient_id, chunk).await?;
                            receipt.attempts += attempts + 1;
                            answer
                        }
                        Err(err) => return Err(err.into()),
                    },
                    None => {
                        let (answer, attempts) = api.push(&message.recipient_id, chunk).await?;
                        receipt.attempts += attempts;
                        answer
                    }
                };
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
