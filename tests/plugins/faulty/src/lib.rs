//! A plugin that misbehaves on request, for the host's fault-isolation tests.
//!
//! Settings: `{"new": "ok"|"fail"|"error"|"panic", "verify": "ok"|"panic", "parse":
//! "ok"|"panic", "send": "ok"|"panic"|"hang"}`. Each of the four also takes `"panic-first:N"`: the
//! first N calls of that entry point panic, counted across every adapter (and
//! channel) of the library, and later calls work. A webhook body is
//! `{"user": "...", "text": "..."}` and becomes one message event (so the example
//! bot answers it). `"new": "fail"` refuses the settings (`invalid_settings`);
//! `"new": "error"` fails in another way (`transient`). `"new":
//! "error-then-wait:PATH"` fails the first construction (`transient`), and every
//! later one waits until the file PATH exists (a barrier for the tests), then works.
#![allow(unsafe_code)] // the export macro expands to unsafe code
#![allow(clippy::manual_async_fn)] // the trait's futures are 'static

use std::{
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
};

use adapter_api::{
    abi_stable::{
        export_root_module,
        prefix_type::PrefixTypeTrait,
        std_types::{RResult, RStr},
    },
    AdapterError, AdapterPlugin, AdapterPluginRef, ChannelAdapterBox, ErrorKind, HostServicesBox,
    InboundEvent, OutboundMessage, PluginInfo, SendReceipt, Verdict, WebhookRequest, API_VERSION,
};
use adapter_kit::Channel;
use serde_json::Value;

#[export_root_module]
pub fn root_module() -> AdapterPluginRef {
    AdapterPlugin { info, new_adapter }.leak_into_prefix()
}

extern "C" fn info() -> PluginInfo {
    PluginInfo {
        id: "faulty".into(),
        name: "Faulty test plugin".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
    }
}

/// Calls of each entry point so far, for the `panic-first:N` modes.
static NEW_CALLS: AtomicU64 = AtomicU64::new(0);
static VERIFY_CALLS: AtomicU64 = AtomicU64::new(0);
static PARSE_CALLS: AtomicU64 = AtomicU64::new(0);
static SEND_CALLS: AtomicU64 = AtomicU64::new(0);

/// Whether this call of an entry point in `mode` panics: always for `"panic"`, for
/// the first N calls (counted in `calls`) for `"panic-first:N"`.
fn panics(mode: &str, calls: &AtomicU64) -> bool {
    match mode.strip_prefix("panic-first:") {
        Some(n) => calls.fetch_add(1, Ordering::SeqCst) < n.parse().unwrap_or(0),
        None => mode == "panic",
    }
}

extern "C" fn new_adapter(
    settings: RStr<'_>,
    host: HostServicesBox,
) -> RResult<ChannelAdapterBox, AdapterError> {
    adapter_kit::new_adapter(settings, host, "faulty_plugin", |json, _log| {
        let settings: Value = serde_json::from_str(json).unwrap_or(Value::Null);
        let mode = |k: &str| settings[k].as_str().unwrap_or("ok").to_owned();
        let new = mode("new");
        if let Some(barrier) = new.strip_prefix("error-then-wait:") {
            if NEW_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(AdapterError::new(
                    ErrorKind::TRANSIENT,
                    "faulty: told to fail the first time",
                ));
            }
            while !std::path::Path::new(barrier).exists() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        } else if panics(&new, &NEW_CALLS) {
            panic!("faulty: told to panic in new_adapter");
        }
        match new.as_str() {
            "fail" => Err(AdapterError::new(
                ErrorKind::INVALID_SETTINGS,
                "faulty: told to fail",
            )),
            "error" => Err(AdapterError::new(
                ErrorKind::TRANSIENT,
                "faulty: told to fail in another way",
            )),
            _ => Ok(Faulty {
                verify: mode("verify"),
                parse: mode("parse"),
                send: mode("send"),
            }),
        }
    })
}

struct Faulty {
    verify: String,
    parse: String,
    send: String,
}

impl Channel for Faulty {
    fn verify(&self, _: &WebhookRequest<'_>) -> Verdict {
        if panics(&self.verify, &VERIFY_CALLS) {
            panic!("faulty: verify");
        }
        Verdict::Accept
    }

    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<InboundEvent>, AdapterError> {
        if panics(&self.parse, &PARSE_CALLS) {
            panic!("faulty: parse");
        }
        let body: Value = serde_json::from_slice(request.body.as_slice())
            .map_err(|e| AdapterError::new(ErrorKind::BAD_REQUEST, e.to_string()))?;
        let mut event = InboundEvent::new(adapter_api::EventKind::MESSAGE);
        event.account_id = "faulty-account".into();
        event.sender_id = body["user"].as_str().unwrap_or("someone").into();
        event.event_id = body["id"].as_str().unwrap_or("").into();
        event.text = adapter_api::abi_stable::std_types::ROption::RSome(
            body["text"].as_str().unwrap_or("").into(),
        );
        Ok(vec![event])
    }

    fn send(
        &self,
        _: OutboundMessage,
    ) -> impl Future<Output = Result<SendReceipt, AdapterError>> + Send + 'static {
        let mode = self.send.clone();
        let panic = panics(&mode, &SEND_CALLS);
        async move {
            if panic {
                panic!("faulty: send");
            }
            match mode.as_str() {
                "hang" => {
                    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                    Ok(SendReceipt::default())
                }
                _ => Ok(SendReceipt {
                    parts: 1,
                    attempts: 1,
                    ..SendReceipt::default()
                }),
            }
        }
    }

    fn call(
        &self,
        _: &str,
        _: &str,
    ) -> impl Future<Output = Result<String, AdapterError>> + Send + 'static {
        async { Ok("{}".to_owned()) }
    }
}
