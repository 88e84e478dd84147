//! Any bytes as a webhook body: the Messenger parser gives events or a
//! `bad webhook body` error, never a panic, and every event has an id. (One binary
//! cannot link two plugins' rlibs: each exports the same root-module symbol.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    match messenger_adapter::webhook::parse::parse(body) {
        Ok(events) => assert!(events.iter().all(|e| !e.event_id.is_empty())),
        Err(err) => assert!(err.to_string().starts_with("bad webhook body: ")),
    }
});
