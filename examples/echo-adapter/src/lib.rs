//! An example DmFlow channel plugin, small enough to read in one sitting: the code
//! `docs/plugin-guide.md` walks through.
//!
//! The "echo" channel is made up. Its platform calls the webhook with a shared
//! secret in `X-Echo-Secret` and a JSON body holding one message; replies are
//! POSTed as JSON to a URL of the settings.
//!
//! - [`settings`]: the channel's settings, validated
//! - [`webhook`]: verify the secret header, parse the body into an event
//! - [`send`]: a reply as one HTTP request, its failures by kind
//! - [`channel`]: the [`Channel`](adapter_kit::Channel) that ties them together

pub mod channel;
pub mod send;
pub mod settings;
pub mod webhook;

adapter_kit::export_plugin! {
    id: "echo",                   // what a host config names: plugin = "echo"
    name: "Echo (example channel)",
    log_target: "echo_adapter",
    new: |settings_json: &str, log| channel::EchoChannel::from_json(settings_json, log),
}
