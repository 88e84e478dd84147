//! Normalized inbound events: what a webhook body means, channel-neutrally.

use std::fmt;

use abi_stable::{
    std_types::{ROption, RString, RVec},
    StableAbi,
};

/// What happened. A `u8` newtype so later versions can add kinds; a host must treat
/// an unknown kind like [`EventKind::OTHER`].
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventKind(pub u8);

impl EventKind {
    /// Anything not listed below; see [`InboundEvent::raw_json`].
    pub const OTHER: Self = Self(0);
    /// A user's message: text, attachments or both.
    pub const MESSAGE: Self = Self(1);
    /// The user tapped a quick reply; [`InboundEvent::payload`] has its payload.
    pub const QUICK_REPLY: Self = Self(2);
    /// The user tapped a postback button, Get Started, or a menu item.
    pub const POSTBACK: Self = Self(3);
    /// A copy of a message the account itself sent. Never answer it.
    pub const ECHO: Self = Self(4);
    /// The user edited an earlier message.
    pub const MESSAGE_EDIT: Self = Self(5);
    /// The user reacted to, or removed a reaction from, a message.
    pub const REACTION: Self = Self(6);
    /// The user read messages up to a watermark.
    pub const READ: Self = Self(7);
    /// Messages were delivered.
    pub const DELIVERY: Self = Self(8);
    /// The user arrived through a link, an ad or a plugin.
    pub const REFERRAL: Self = Self(9);
    /// The user opted in (plugin, notification messages).
    pub const OPTIN: Self = Self(10);
    /// Conversation ownership changed or was requested (handover protocol).
    pub const HANDOVER: Self = Self(11);
    /// Account linking finished (linked or unlinked).
    pub const ACCOUNT_LINKING: Self = Self(12);
    /// The platform warned about or restricted the account.
    pub const POLICY_ENFORCEMENT: Self = Self(13);
    /// A game play finished.
    pub const GAME_PLAY: Self = Self(14);
    /// Feedback on a message or a survey.
    pub const FEEDBACK: Self = Self(15);
    /// The user started following the account (e.g. LINE `follow`).
    pub const FOLLOW: Self = Self(16);
    /// The user stopped following the account.
    pub const UNFOLLOW: Self = Self(17);

    /// A short lower-case name, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::OTHER => "other",
            Self::MESSAGE => "message",
            Self::QUICK_REPLY => "quick_reply",
            Self::POSTBACK => "postback",
            Self::ECHO => "echo",
            Self::MESSAGE_EDIT => "message_edit",
            Self::REACTION => "reaction",
            Self::READ => "read",
            Self::DELIVERY => "delivery",
            Self::REFERRAL => "referral",
            Self::OPTIN => "optin",
            Self::HANDOVER => "handover",
            Self::ACCOUNT_LINKING => "account_linking",
            Self::POLICY_ENFORCEMENT => "policy_enforcement",
            Self::GAME_PLAY => "game_play",
            Self::FEEDBACK => "feedback",
            Self::FOLLOW => "follow",
            Self::UNFOLLOW => "unfollow",
            _ => "unknown",
        }
    }
}

impl fmt::Debug for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bit flags on an [`InboundEvent`].
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventFlags(pub u32);

impl EventFlags {
    /// No flag.
    pub const NONE: Self = Self(0);
    /// Delivered while another app owns the conversation: observe, do not answer.
    pub const STANDBY: Self = Self(1);
    /// Sent by the account itself.
    pub const ECHO: Self = Self(1 << 1);
    /// Came from Instagram messaging rather than Messenger.
    pub const INSTAGRAM: Self = Self(1 << 2);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the flags of `other` added.
    #[must_use]
    pub fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl fmt::Debug for EventFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::STANDBY, "standby"),
            (Self::ECHO, "echo"),
            (Self::INSTAGRAM, "instagram"),
        ];
        let set: Vec<_> = names
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, name)| *name)
            .collect();
        write!(f, "[{}]", set.join(","))
    }
}

/// What an attachment holds. A `u8` newtype; unknown values are opaque attachments.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttachmentKind(pub u8);

impl AttachmentKind {
    /// Not one of the kinds below; see [`Attachment::raw_json`].
    pub const OTHER: Self = Self(0);
    /// A picture.
    pub const IMAGE: Self = Self(1);
    /// A sound clip.
    pub const AUDIO: Self = Self(2);
    /// A video.
    pub const VIDEO: Self = Self(3);
    /// Any other file.
    pub const FILE: Self = Self(4);
    /// A sticker.
    pub const STICKER: Self = Self(5);
    /// A location.
    pub const LOCATION: Self = Self(6);
    /// A shared link or content the platform could not render natively.
    pub const FALLBACK: Self = Self(7);
    /// A structured template (cards, buttons).
    pub const TEMPLATE: Self = Self(8);

    /// A short lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::IMAGE => "image",
            Self::AUDIO => "audio",
            Self::VIDEO => "video",
            Self::FILE => "file",
            Self::STICKER => "sticker",
            Self::LOCATION => "location",
            Self::FALLBACK => "fallback",
            Self::TEMPLATE => "template",
            _ => "other",
        }
    }
}

impl fmt::Debug for AttachmentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One attachment of a message.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// What it is.
    pub kind: AttachmentKind,
    /// Where to fetch it, when it has a URL.
    pub url: ROption<RString>,
    /// The channel's own type name (e.g. `"ig_reel"`), useful when `kind` is `OTHER`.
    pub type_name: RString,
    /// The attachment's JSON as the channel sent it.
    pub raw_json: RString,
}

/// One normalized event from a webhook body.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct InboundEvent {
    /// What happened.
    pub kind: EventKind,
    /// Standby, echo, Instagram...
    pub flags: EventFlags,
    /// The business account the event belongs to (for Messenger, the Page id).
    pub account_id: RString,
    /// Who caused the event (for Messenger, the PSID; empty when the channel gives none).
    pub sender_id: RString,
    /// Who it was addressed to.
    pub recipient_id: RString,
    /// When it happened, in milliseconds since the Unix epoch, as the channel gives it;
    /// 0 when it gives none. Never the time the webhook was received: a redelivery of
    /// the event must carry the same value, as hosts key their deduplication records
    /// by `event_id` and `timestamp_ms` together.
    pub timestamp_ms: u64,
    /// A stable id for deduplication: the channel's message id where there is one,
    /// otherwise a digest of account, sender, timestamp and kind. A redelivery of the
    /// event must carry the same id (and the same `timestamp_ms`).
    pub event_id: RString,
    /// The message text, if any.
    pub text: ROption<RString>,
    /// The quick-reply or postback payload, if any.
    pub payload: ROption<RString>,
    /// The message's attachments.
    pub attachments: RVec<Attachment>,
    /// A channel-specific reply handle (e.g. LINE's reply token), if any.
    pub reply_token: ROption<RString>,
    /// Further normalized details as a JSON object, by kind (for Messenger: `reply_to`,
    /// `commands`, `referral`, `reaction`, `watermark`, `mids`, handover owners, ...);
    /// empty when there are none. Lets the contract grow without layout changes.
    pub details_json: RString,
    /// The event's own JSON as the channel sent it.
    pub raw_json: RString,
}

impl InboundEvent {
    /// An empty event of `kind`; channels fill in the rest.
    pub fn new(kind: EventKind) -> Self {
        Self {
            kind,
            flags: EventFlags::NONE,
            account_id: RString::new(),
            sender_id: RString::new(),
            recipient_id: RString::new(),
            timestamp_ms: 0,
            event_id: RString::new(),
            text: ROption::RNone,
            payload: ROption::RNone,
            attachments: RVec::new(),
            reply_token: ROption::RNone,
            details_json: RString::new(),
            raw_json: RString::new(),
        }
    }

    /// The conversation this event belongs to: account and sender.
    pub fn conversation_key(&self) -> (&str, &str) {
        (self.account_id.as_str(), self.sender_id.as_str())
    }
}
