//! The example bot: deterministic, so tests and a person trying it can predict it.

use adapter_api::{
    abi_stable::std_types::ROption, AttachmentKind, EventFlags, EventKind, InboundEvent, Media,
    MediaKind, OutboundMessage, SenderAction,
};

use crate::config::BotConfig;

/// The replies to `event`, in order; empty when the event needs none.
///
/// - a text message: the same text;
/// - a quick reply or a postback: its payload as text;
/// - an image, audio, video or file: the same attachment by URL;
/// - echoes, standby events, reads, deliveries, reactions, edits and the rest: nothing.
pub fn replies(event: &InboundEvent, config: &BotConfig) -> Vec<OutboundMessage> {
    if event.flags.contains(EventFlags::ECHO)
        || event.flags.contains(EventFlags::STANDBY)
        || event.sender_id.is_empty()
    {
        return Vec::new();
    }
    let account = event.account_id.as_str();
    let user = event.sender_id.as_str();
    let mut replies = Vec::new();
    match event.kind {
        EventKind::MESSAGE => {
            if let ROption::RSome(text) = &event.text {
                replies.push(OutboundMessage::text(account, user, text.as_str()));
            }
            for attachment in event.attachments.iter() {
                let kind = match attachment.kind {
                    AttachmentKind::IMAGE => MediaKind::IMAGE,
                    AttachmentKind::AUDIO => MediaKind::AUDIO,
                    AttachmentKind::VIDEO => MediaKind::VIDEO,
                    AttachmentKind::FILE => MediaKind::FILE,
                    _ => continue,
                };
                let ROption::RSome(url) = &attachment.url else {
                    continue;
                };
                let mut reply = OutboundMessage::new(account, user);
                reply.media = ROption::RSome(Media {
                    kind,
                    url: ROption::RSome(url.clone()),
                    attachment_id: ROption::RNone,
                });
                replies.push(reply);
            }
        }
        EventKind::QUICK_REPLY | EventKind::POSTBACK => {
            if let ROption::RSome(payload) = &event.payload {
                replies.push(OutboundMessage::text(account, user, payload.as_str()));
            }
        }
        _ => {}
    }
    if config.typing_indicator && !replies.is_empty() {
        let mut typing = OutboundMessage::new(account, user);
        typing.sender_action = SenderAction::TYPING_ON;
        replies.insert(0, typing);
    }
    for reply in &mut replies {
        reply.reply_token = event.reply_token.clone();
    }
    replies
}

/// The example bot as the dispatcher's reply handler.
pub struct Bot {
    config: BotConfig,
}

impl Bot {
    /// A bot with `config`.
    pub fn new(config: BotConfig) -> Self {
        Self { config }
    }
}

impl crate::dispatch::ReplyHandler for Bot {
    fn replies(&self, event: &InboundEvent) -> Vec<OutboundMessage> {
        replies(event, &self.config)
    }
}

#[cfg(test)]
mod tests {
    use adapter_api::{abi_stable::std_types::RString, Attachment};

    use super::*;

    fn event(kind: EventKind) -> InboundEvent {
        let mut event = InboundEvent::new(kind);
        event.account_id = "PAGE".into();
        event.sender_id = "USER".into();
        event
    }

    #[test]
    fn text_is_echoed() {
        let mut e = event(EventKind::MESSAGE);
        e.text = ROption::RSome("hello".into());
        let replies = replies(&e, &BotConfig::default());
        assert_eq!(
            replies,
            vec![OutboundMessage::text("PAGE", "USER", "hello")]
        );
    }

    #[test]
    fn payloads_are_answered_and_media_sent_back() {
        let mut e = event(EventKind::POSTBACK);
        e.payload = ROption::RSome("GET_STARTED".into());
        assert_eq!(
            replies(&e, &BotConfig::default())[0].text,
            ROption::RSome(RString::from("GET_STARTED"))
        );

        let mut e = event(EventKind::MESSAGE);
        e.attachments.push(Attachment {
            kind: AttachmentKind::IMAGE,
            url: ROption::RSome("https://x/y.png".into()),
            type_name: "image".into(),
            raw_json: "{}".into(),
        });
        let replies = replies(
            &e,
            &BotConfig {
                typing_indicator: true,
            },
        );
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].sender_action, SenderAction::TYPING_ON);
        assert_eq!(replies[1].media.as_ref().unwrap().kind, MediaKind::IMAGE);
    }

    #[test]
    fn echoes_standby_and_receipts_are_never_answered() {
        let mut echo = event(EventKind::ECHO);
        echo.flags = EventFlags::ECHO;
        echo.text = ROption::RSome("loop?".into());
        let mut standby = event(EventKind::MESSAGE);
        standby.flags = EventFlags::STANDBY;
        standby.text = ROption::RSome("not ours".into());
        for e in [
            echo,
            standby,
            event(EventKind::READ),
            event(EventKind::DELIVERY),
            event(EventKind::REACTION),
            event(EventKind::MESSAGE_EDIT),
        ] {
            assert!(
                replies(&e, &BotConfig::default()).is_empty(),
                "{:?}",
                e.kind
            );
        }
    }
}
