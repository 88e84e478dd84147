//! `demo`: the no-account try-out. Starts the host on a free loopback port with a
//! sandbox Graph API, plays a short signed conversation through the real Messenger
//! plugin, and writes what the user said and what the Send API received, each line
//! as soon as it happens.

use std::{io::Write, path::Path, time::Duration};

use anyhow::{bail, Context};
use hmac::{Hmac, Mac};
use sandbox::{GraphCall, SandboxGraph};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::{config::Config, Server};

const PAGE: &str = "100000000000001";
const USER: &str = "7000000000000001";
const APP_SECRET: &str = "demo-app-secret";
const VERIFY_TOKEN: &str = "demo-verify-token";
const PAGE_TOKEN: &str = "demo-page-access-token";

/// One step of the scripted conversation.
struct Step {
    /// What the transcript says the user did.
    said: &'static str,
    /// The webhook body's messaging item.
    item: Value,
    /// The bot's reply as the transcript describes it (see [`describe`]), if any.
    reply: Option<&'static str>,
}

fn conversation() -> Vec<Step> {
    let message = |mid: &str, message: Value| json!({ "sender": { "id": USER }, "recipient": { "id": PAGE }, "timestamp": 1_700_000_000_000u64, "message": merge(json!({ "mid": mid }), message) });
    vec![
        Step {
            said: "text \"Hello, DmFlow!\"",
            item: message("m_demo_1", json!({ "text": "Hello, DmFlow!" })),
            reply: Some("text \"Hello, DmFlow!\""),
        },
        Step {
            said: "taps quick reply \"Blue\"",
            item: message(
                "m_demo_2",
                json!({ "text": "Blue", "quick_reply": { "payload": "COLOR_BLUE" } }),
            ),
            reply: Some("text \"COLOR_BLUE\""),
        },
        Step {
            said: "taps button \"Get Started\"",
            item: json!({ "sender": { "id": USER }, "recipient": { "id": PAGE }, "timestamp": 1_700_000_000_100u64,
                          "postback": { "mid": "m_demo_3", "title": "Get Started", "payload": "GET_STARTED" } }),
            reply: Some("text \"GET_STARTED\""),
        },
        Step {
            said: "sends a photo",
            item: message(
                "m_demo_4",
                json!({ "attachments": [{ "type": "image", "payload": { "url": "https://example.com/cat.jpg" } }] }),
            ),
            reply: Some("image https://example.com/cat.jpg"),
        },
        Step {
            said: "reads the replies (no answer expected)",
            item: json!({ "sender": { "id": USER }, "recipient": { "id": PAGE }, "timestamp": 1_700_000_000_200u64,
                          "read": { "watermark": 1_700_000_000_150u64 } }),
            reply: None,
        },
    ]
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(APP_SECRET.as_bytes()).expect("any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn describe(call: &GraphCall) -> String {
    let message = &call.body["message"];
    if let Some(text) = message["text"].as_str() {
        format!("text {text:?}")
    } else if let Some(kind) = message["attachment"]["type"].as_str() {
        format!(
            "{kind} {}",
            message["attachment"]["payload"]["url"]
                .as_str()
                .unwrap_or("?")
        )
    } else {
        call.body.to_string()
    }
}

/// How long to watch for a Send API call that should not come (after a read
/// receipt, after a forged webhook) before saying none came.
const QUIET: Duration = Duration::from_millis(150);

/// Runs the demo with the Messenger plugin from `plugins_dir`, writing the transcript
/// to `out` line by line as the conversation goes; an error says which check failed.
pub async fn run(plugins_dir: &Path, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    // Load the Messenger plugin alone, whatever else the folder holds.
    let library = plugins_dir.join(format!(
        "{}messenger_adapter{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    if !library.is_file() {
        bail!(
            "no Messenger plugin at {}: build it first with `cargo build --release`",
            library.display()
        );
    }
    let only_messenger = tempfile::tempdir().context("cannot make a temporary folder")?;
    let copy = only_messenger
        .path()
        .join(library.file_name().unwrap_or_default());
    std::fs::copy(&library, &copy).with_context(|| format!("cannot copy {}", library.display()))?;
    // The host loads only libraries no one but their owner may write, whatever the
    // umask the build ran under.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot set the mode of {}", copy.display()))?;
    }
    let plugins_dir = only_messenger.path();
    let sandbox = SandboxGraph::start()
        .await
        .context("cannot start the sandbox Graph API")?;
    let config_text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
plugins_dir = {plugins_dir:?}

[queue]
path = ":memory:"

[[channels]]
name = "messenger"
plugin = "messenger"

[channels.settings]
app_secret = "${{DEMO_APP_SECRET}}"
verify_token = "{VERIFY_TOKEN}"
graph_api_base = "{graph}"
pages = [{{ id = "{PAGE}", access_token = "{PAGE_TOKEN}" }}]
"#,
        plugins_dir = plugins_dir.display().to_string(),
        graph = sandbox.url,
    );
    let config = Config::parse(&config_text, "demo config", Path::new("."), |name| {
        (name == "DEMO_APP_SECRET").then(|| APP_SECRET.to_owned())
    })?;
    let server = Server::bind(config).await?;
    let base = format!("http://{}/webhooks/messenger", server.addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        stopped.await.ok();
    }));

    let result = play(&base, &sandbox, out).await;
    stop.send(()).ok();
    running.await.context("the host task failed")??;
    result?;
    writeln!(out, "\nThe host shut down cleanly. Every check passed.")?;
    Ok(())
}

async fn play(
    base: &str,
    sandbox: &SandboxGraph,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    writeln!(
        out,
        "DmFlow demo: a Messenger conversation through the real plugin"
    )?;
    writeln!(out, "  webhook  {base}")?;
    writeln!(out, "  sandbox  Graph API at {}\n", sandbox.url)?;

    let url = format!(
        "{base}?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=demo-challenge"
    );
    let response = client.get(&url).send().await?;
    let status = response.status().as_u16();
    let body = response.text().await?;
    writeln!(
        out,
        "  setup    GET handshake with the verify token -> {status} {body:?}"
    )?;
    if status != 200 || body != "demo-challenge" {
        bail!("the handshake failed");
    }

    let mut expected_calls = 0;
    for step in conversation() {
        let body = serde_json::to_vec(&json!({
            "object": "page",
            "entry": [{ "id": PAGE, "time": 1_700_000_000_000u64, "messaging": [step.item] }],
        }))?;
        let status = client
            .post(base)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sign(&body))
            .body(body)
            .send()
            .await?
            .status()
            .as_u16();
        writeln!(out, "  user     {:<40} -> webhook {status}", step.said)?;
        if status != 200 {
            bail!("the signed webhook was refused");
        }
        if step.reply.is_some() {
            expected_calls += 1;
        }
        // Waits for the reply, if one is expected, then a moment for any extra call.
        let calls = sandbox.wait_for(expected_calls, QUIET).await;
        if calls.len() != expected_calls {
            bail!(
                "expected {expected_calls} Send API call(s), the sandbox received {}",
                calls.len()
            );
        }
        let Some(expected) = step.reply else {
            continue;
        };
        let call = &calls[expected_calls - 1];
        let token_ok = call.query.get("access_token").map(String::as_str) == Some(PAGE_TOKEN)
            && call
                .query
                .get("appsecret_proof")
                .is_some_and(|p| p.len() == 64);
        writeln!(
            out,
            "  bot      {:<40}    Send API: {} to {}, page token and appsecret_proof {}",
            describe(call),
            call.body["messaging_type"].as_str().unwrap_or("?"),
            call.recipient(),
            if token_ok { "ok" } else { "WRONG" }
        )?;
        if describe(call) != expected || !token_ok || call.recipient() != USER {
            bail!("the reply was not the expected {expected}");
        }
    }

    let forged = br#"{"object":"page","entry":[]}"#;
    let status = client
        .post(base)
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
        .body(&forged[..])
        .send()
        .await?
        .status()
        .as_u16();
    // No call is expected: the calls so far are there already, so this only watches
    // for an extra one.
    let calls = sandbox.wait_for(expected_calls, QUIET).await;
    writeln!(
        out,
        "  attacker forged webhook, wrong signature         -> webhook {status}, {} call(s) sent",
        calls.len() - expected_calls
    )?;
    if status != 403 || calls.len() != expected_calls {
        bail!("a forged webhook was not refused");
    }
    Ok(())
}
