//! The channel-neutral outgoing message.

use abi_stable::{
    std_types::{ROption, RString, RVec},
    StableAbi,
};

/// Why a message is sent (Messenger's `messaging_type`). A `u8` newtype.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct MessagingType(pub u8);

impl MessagingType {
    /// A reply to a user's message, inside the platform's reply window.
    pub const RESPONSE: Self = Self(0);
    /// A proactive update inside the reply window.
    pub const UPDATE: Self = Self(1);
    /// Outside the reply window, under [`OutboundMessage::tag`].
    pub const MESSAGE_TAG: Self = Self(2);
}

/// What a quick reply asks for. A `u8` newtype.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct QuickReplyKind(pub u8);

impl QuickReplyKind {
    /// A button with a title and a payload.
    pub const TEXT: Self = Self(0);
    /// Offers the user's phone number.
    pub const USER_PHONE_NUMBER: Self = Self(1);
    /// Offers the user's e-mail address.
    pub const USER_EMAIL: Self = Self(2);
}

/// A quick reply offered under a message.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct QuickReply {
    /// What it asks for.
    pub kind: QuickReplyKind,
    /// The label (for [`QuickReplyKind::TEXT`]).
    pub title: RString,
    /// What comes back when the user taps it.
    pub payload: RString,
    /// An optional icon.
    pub image_url: ROption<RString>,
}

impl QuickReply {
    /// A text quick reply.
    pub fn text(title: impl Into<String>, payload: impl Into<String>) -> Self {
        Self {
            kind: QuickReplyKind::TEXT,
            title: title.into().into(),
            payload: payload.into().into(),
            image_url: ROption::RNone,
        }
    }
}

/// What a button does. A `u8` newtype.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ButtonKind(pub u8);

impl ButtonKind {
    /// Opens [`Button::value`] as a URL.
    pub const URL: Self = Self(0);
    /// Sends [`Button::value`] back as a postback payload.
    pub const POSTBACK: Self = Self(1);
    /// Calls the phone number in [`Button::value`].
    pub const PHONE_NUMBER: Self = Self(2);
}

/// A button on a message or a card.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Button {
    /// What it does.
    pub kind: ButtonKind,
    /// The label.
    pub title: RString,
    /// The URL, postback payload or phone number.
    pub value: RString,
}

/// A card of a carousel.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Card {
    /// The title.
    pub title: RString,
    /// An optional subtitle.
    pub subtitle: ROption<RString>,
    /// An optional picture.
    pub image_url: ROption<RString>,
    /// A URL opened when the card itself is tapped.
    pub default_url: ROption<RString>,
    /// The card's buttons.
    pub buttons: RVec<Button>,
}

/// The kind of a [`Media`] attachment. A `u8` newtype.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MediaKind(pub u8);

impl MediaKind {
    /// A picture.
    pub const IMAGE: Self = Self(1);
    /// A sound clip.
    pub const AUDIO: Self = Self(2);
    /// A video.
    pub const VIDEO: Self = Self(3);
    /// Any other file.
    pub const FILE: Self = Self(4);
}

/// A media attachment, by URL or by a channel's saved attachment id.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Media {
    /// What it is.
    pub kind: MediaKind,
    /// A public URL the channel fetches.
    pub url: ROption<RString>,
    /// An id from the channel's upload API.
    pub attachment_id: ROption<RString>,
}

/// A typing indicator or read receipt. A `u8` newtype; `NONE` means a normal message.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct SenderAction(pub u8);

impl SenderAction {
    /// Not a sender action: a normal message.
    pub const NONE: Self = Self(0);
    /// Show the typing indicator.
    pub const TYPING_ON: Self = Self(1);
    /// Hide the typing indicator.
    pub const TYPING_OFF: Self = Self(2);
    /// Mark the conversation as seen.
    pub const MARK_SEEN: Self = Self(3);
    /// React to [`OutboundMessage::reply_to`] with the emoji in `text`.
    pub const REACT: Self = Self(4);
    /// Remove the reaction from [`OutboundMessage::reply_to`].
    pub const UNREACT: Self = Self(5);
}

/// A message to send. Build one with [`OutboundMessage::text`] or
/// [`OutboundMessage::new`] and set the fields you need.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct OutboundMessage {
    /// The business account to send from (for Messenger, the Page id).
    pub account_id: RString,
    /// Who receives it (for Messenger, the PSID).
    pub recipient_id: RString,
    /// Why it is sent.
    pub messaging_type: MessagingType,
    /// The message tag, with [`MessagingType::MESSAGE_TAG`].
    pub tag: ROption<RString>,
    /// The text.
    pub text: ROption<RString>,
    /// Quick replies offered under the message.
    pub quick_replies: RVec<QuickReply>,
    /// Buttons under the text.
    pub buttons: RVec<Button>,
    /// A carousel of cards.
    pub cards: RVec<Card>,
    /// A media attachment.
    pub media: ROption<Media>,
    /// A typing indicator or read receipt instead of a message.
    pub sender_action: SenderAction,
    /// The id of the message this one answers or reacts to.
    pub reply_to: ROption<RString>,
    /// A channel-specific reply handle from the inbound event (e.g. LINE's reply token).
    pub reply_token: ROption<RString>,
    /// Channel-specific options as a JSON object (for Messenger:
    /// `notification_type`, `persona_id`, `metadata`); empty for none.
    ///
    /// One key is reserved for the host: `"idempotency_key"`, a string the host sets
    /// on each reply, the same for every try of that reply (across host restarts too)
    /// and different for different replies. Every plugin must accept it. Where the
    /// channel can recognise a repeated request, the plugin uses it (LINE's
    /// `X-Line-Retry-Key` is derived from it), so that trying again a reply that did
    /// arrive does not deliver it twice.
    pub options_json: RString,
    /// A channel-native message object sent as is instead of the fields above; empty
    /// for none.
    pub raw_json: RString,
}

impl OutboundMessage {
    /// An empty message from `account_id` to `recipient_id`.
    pub fn new(account_id: impl Into<String>, recipient_id: impl Into<String>) -> Self {
        Self {
            account_id: account_id.into().into(),
            recipient_id: recipient_id.into().into(),
            messaging_type: MessagingType::RESPONSE,
            tag: ROption::RNone,
            text: ROption::RNone,
            quick_replies: RVec::new(),
            buttons: RVec::new(),
            cards: RVec::new(),
            media: ROption::RNone,
            sender_action: SenderAction::NONE,
            reply_to: ROption::RNone,
            reply_token: ROption::RNone,
            options_json: RString::new(),
            raw_json: RString::new(),
        }
    }

    /// A text message.
    pub fn text(
        account_id: impl Into<String>,
        recipient_id: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        let mut message = Self::new(account_id, recipient_id);
        message.text = ROption::RSome(text.into().into());
        message
    }
}
