//! Incoming webhooks: the GET handshake and signature checks ([`verify`]), and
//! the body's events ([`parse`]).

pub mod parse;
pub mod verify;
