//! Any header value and body: signature checks never panic, and accept only a
//! signature that really is the body's HMAC.
#![no_main]

use adapter_api::{abi_stable::std_types::RSlice, Header, Verdict, WebhookRequest};
use libfuzzer_sys::fuzz_target;
use messenger_adapter::{settings::Settings, webhook::verify};

const SETTINGS: &str = r#"{"app_secret":"fuzz-secret","verify_token":"t","allow_sha1_signature":true,"pages":[{"id":"1","access_token":"a"}]}"#;

fuzz_target!(|input: (&str, &str, &[u8])| {
    let (sha256, sha1, body) = input;
    let settings = Settings::from_json(SETTINGS).unwrap();
    let headers = [
        Header { name: "x-hub-signature-256".into(), value: sha256.into() },
        Header { name: "x-hub-signature".into(), value: sha1.into() },
    ];
    let request = WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        query: sha1.into(),
        headers: RSlice::from_slice(&headers),
        body: RSlice::from_slice(body),
    };
    if verify::verify(&settings, &request) == Verdict::Accept {
        assert!(sha256.trim().eq_ignore_ascii_case(&verify::sign_sha256(b"fuzz-secret", body)));
    }
    let get = WebhookRequest { method: "GET".into(), ..request };
    let _ = verify::verify(&settings, &get);
});
