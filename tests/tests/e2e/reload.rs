//! Channels added, changed and removed while the host runs: the config file is
//! edited, then SIGHUP (or `POST /reload` on the admin listener) makes the host read
//! it again. Nothing accepted is lost or answered twice across reloads.

use e2e::{fake_graph, page_token, sign, FakeGraph, Host, HostBuilder, APP_SECRET};
use serde_json::Value;

use crate::{
    delivery::{delivered, message_from, until},
    post_signed,
};

const ADMIN: &str = "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
const SHOP_SECRET: &str = "shop-app-secret";

/// A second Messenger channel, `shop`, with an app secret of its own, serving the
/// fixtures' Page `1` with the token `shop-token`.
fn shop_channel(graph: &FakeGraph) -> String {
    format!(
        r#"
[[channels]]
name = "shop"
plugin = "messenger"

[channels.settings]
app_secret = "{SHOP_SECRET}"
verify_token = "shop-verify-token"
graph_api_base = "{}"
graph_api_version = "v25.0"
backoff_base_ms = 20
pages = [{{ id = "1", access_token = "shop-token" }}]
"#,
        graph.url
    )
}

/// POSTs `body` to channel `channel`'s webhook, signed with `secret`; the status.
async fn post_to(host: &Host, channel: &str, secret: &str, body: &[u8]) -> u16 {
    reqwest::Client::new()
        .post(host.webhook(channel))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign(secret, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The config generation the host serves (from `/metrics`).
async fn generation(host: &Host) -> f64 {
    host.metric("dmflow_config_generation").await
}

async fn reloads(host: &Host, outcome: &str) -> f64 {
    host.metric(&format!(
        "dmflow_config_reloads_total{{outcome=\"{outcome}\"}}"
    ))
    .await
}

/// Sends SIGHUP and waits for the host to serve generation `next`.
async fn hang_up_until_generation(host: &Host, next: f64) {
    host.hangup();
    until(&format!("generation {next}"), || async {
        generation(host).await >= next
    })
    .await;
}

/// The access token the reply with `text` was sent with.
fn token_of(graph: &FakeGraph, text: &str) -> String {
    let call = graph
        .delivered()
        .into_iter()
        .find(|c| c.text() == Some(text))
        .unwrap();
    call.query["access_token"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_added_to_the_file_is_served_after_sighup_with_its_own_secret() {
    let graph = fake_graph().await;
    let builder = HostBuilder::new(&graph.url);
    let host = builder.start();
    let body = message_from("7600", "to-the-shop");
    assert_eq!(post_to(&host, "shop", SHOP_SECRET, &body).await, 404);
    assert_eq!(generation(&host).await, 1.0);

    builder
        .clone()
        .channels(&shop_channel(&graph))
        .write(builder.dir());
    hang_up_until_generation(&host, 2.0).await;

    // Signed with the first channel's secret: refused by the new channel.
    assert_eq!(post_to(&host, "shop", APP_SECRET, &body).await, 403);
    assert_eq!(post_to(&host, "shop", SHOP_SECRET, &body).await, 200);
    until("the shop's reply", || async {
        delivered(&graph, "to-the-shop") >= 1
    })
    .await;
    assert_eq!(token_of(&graph, "to-the-shop"), "shop-token");
    // The first channel was left as it was.
    post_signed(&host, &message_from("7601", "still-here")).await;
    until("the first channel's reply", || async {
        delivered(&graph, "still-here") >= 1
    })
    .await;
    assert_eq!(token_of(&graph, "still-here"), page_token("1"));
    let log = host.log();
    assert!(
        log.contains("config reloaded: added [shop], changed [], removed []"),
        "{log}"
    );
    assert!(!log.contains(SHOP_SECRET), "a secret in the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_page_token_is_used_by_the_next_reply_after_a_reload() {
    let graph = fake_graph().await;
    let builder = HostBuilder::new(&graph.url);
    let host = builder.start();
    post_signed(&host, &message_from("7610", "before-rotation")).await;
    until("the first reply", || async {
        delivered(&graph, "before-rotation") >= 1
    })
    .await;
    assert_eq!(token_of(&graph, "before-rotation"), page_token("1"));

    builder
        .clone()
        .token_suffix("-rotated")
        .write(builder.dir());
    hang_up_until_generation(&host, 2.0).await;
    post_signed(&host, &message_from("7610", "after-rotation")).await;
    until("the reply after the rotation", || async {
        delivered(&graph, "after-rotation") >= 1
    })
    .await;
    assert_eq!(
        token_of(&graph, "after-rotation"),
        format!("{}-rotated", page_token("1"))
    );
    assert!(
        host.log()
            .contains("config reloaded: added [], changed [messenger], removed []"),
        "{}",
        host.log()
    );
    assert!(!host.log().contains("-rotated"), "a token in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_does_not_parse_is_refused_and_the_host_serves_as_before() {
    let graph = fake_graph().await;
    let builder = HostBuilder::new(&graph.url);
    let host = builder.start();
    let config = builder.dir().join("host.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{good}\n[[channels]\nname = ")).unwrap();
    host.hangup();
    until("the reload to be refused", || async {
        reloads(&host, "refused").await >= 1.0
    })
    .await;
    assert_eq!(generation(&host).await, 1.0);
    assert_eq!(reloads(&host, "applied").await, 0.0);
    let log = host.log();
    let refused: Vec<_> = log
        .lines()
        .filter(|l| l.contains("config reload refused"))
        .collect();
    assert_eq!(refused.len(), 1, "{log}");
    assert!(refused[0].contains("host.toml"), "{}", refused[0]);

    // Still serving the channel it had, with its secret.
    post_signed(&host, &message_from("7620", "after-a-bad-reload")).await;
    until("the reply", || async {
        delivered(&graph, "after-a-bad-reload") >= 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn post_reload_on_the_admin_listener_refuses_a_refused_setting_whole_and_applies_a_fix() {
    let graph = fake_graph().await;
    let builder = HostBuilder::new(&graph.url).channels(ADMIN);
    let host = builder.start();
    let admin = host.admin_url.clone().unwrap();
    let client = reqwest::Client::new();
    let reload = || async {
        let response = client.post(format!("{admin}/reload")).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };

    // The shop channel added, and the first channel's settings with a typo: the
    // plugin refuses the setting, so neither change is applied.
    builder
        .clone()
        .messenger_setting("verfy_token", "\"x\"")
        .channels(&shop_channel(&graph))
        .write(builder.dir());
    let (status, answer) = reload().await;
    assert_eq!(status, 422, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("channels[0] (messenger)") && error.contains("verfy_token"),
        "{error}"
    );
    assert_eq!(answer["generation"], 1);
    let body = message_from("7630", "shop-after-fix");
    assert_eq!(post_to(&host, "shop", SHOP_SECRET, &body).await, 404);

    builder
        .clone()
        .channels(&shop_channel(&graph))
        .write(builder.dir());
    let (status, answer) = reload().await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["generation"], 2);
    assert_eq!(answer["added"], serde_json::json!(["shop"]));
    assert_eq!(answer["changed"], serde_json::json!([]));
    assert_eq!(post_to(&host, "shop", SHOP_SECRET, &body).await, 200);

    let health = host.health().await;
    assert_eq!(health["generation"], 2, "{health}");
    // Never on the public listener.
    let public = client
        .post(format!("{}/reload", host.url))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_channel_gets_404_and_its_queued_replies_are_still_sent_once() {
    let graph = fake_graph().await;
    // Every send fails for now: the shop's reply waits in its queue.
    graph.set_outage(Some(e2e::Scripted::graph_error(
        500,
        1200,
        0,
        "Temporary send message failure",
    )));
    let builder = HostBuilder::new(&graph.url);
    let host = builder.clone().channels(&shop_channel(&graph)).start();
    let body = message_from("7640", "queued-at-the-shop");
    assert_eq!(post_to(&host, "shop", SHOP_SECRET, &body).await, 200);
    until("the shop's reply to fail once", || async {
        host.sends("shop", "transient").await >= 1.0
    })
    .await;

    builder.write(builder.dir());
    hang_up_until_generation(&host, 2.0).await;
    let later = message_from("7641", "too-late");
    assert_eq!(post_to(&host, "shop", SHOP_SECRET, &later).await, 404);
    assert!(host.log().contains("removed [shop]"), "{}", host.log());

    graph.set_outage(None);
    until("the queued reply after the outage", || async {
        delivered(&graph, "queued-at-the-shop") >= 1
    })
    .await;
    assert_eq!(token_of(&graph, "queued-at-the-shop"), "shop-token");
    // Positive control: a later reply in the same conversation's Page, on the
    // channel that stayed, then the count again.
    post_signed(&host, &message_from("7640", "control-after-removal")).await;
    until("the control reply", || async {
        delivered(&graph, "control-after-removal") >= 1
    })
    .await;
    assert_eq!(delivered(&graph, "queued-at-the-shop"), 1);
    assert_eq!(delivered(&graph, "too-late"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_webhooks_with_three_reloads_among_them_are_each_answered_once() {
    let graph = fake_graph().await;
    // Sends take a while, so that reloads land while some are under way.
    graph.set_delay(std::time::Duration::from_millis(5));
    let builder = HostBuilder::new(&graph.url);
    let host = builder.start();
    let texts: Vec<String> = (0..300).map(|i| format!("load-{i}")).collect();
    for (i, text) in texts.iter().enumerate() {
        if i > 0 && i % 75 == 0 {
            // A rotated token each time: every reload replaces the adapter.
            let reload = i / 75;
            builder
                .clone()
                .token_suffix(&format!("-r{reload}"))
                .write(builder.dir());
            host.hangup();
        }
        post_signed(&host, &message_from(&format!("77{:02}", i % 30), text)).await;
    }
    until("the third reload", || async {
        generation(&host).await >= 4.0
    })
    .await;
    until("every reply", || async {
        texts.iter().all(|t| delivered(&graph, t) >= 1)
    })
    .await;
    for user in 0..30 {
        let text = format!("control-{user}");
        post_signed(&host, &message_from(&format!("77{user:02}"), &text)).await;
        until("a control reply", || async {
            delivered(&graph, &text) >= 1
        })
        .await;
    }
    for text in &texts {
        assert_eq!(delivered(&graph, text), 1, "{text}");
    }
    assert_eq!(reloads(&host, "applied").await, 3.0);
    // The last replies went out with the last token.
    assert_eq!(
        token_of(&graph, "control-0"),
        format!("{}-r3", page_token("1"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_dropped_into_the_folder_is_loaded_by_a_reload_and_serves_its_new_channel() {
    let graph = fake_graph().await;
    let line_api = fake_graph().await;
    let builder = HostBuilder::new(&graph.url);
    let host = builder.start();
    assert!(!host.log().contains("id=line"), "{}", host.log());

    builder
        .clone()
        .plugin_file(e2e::library("line_adapter"))
        .channels(&format!(
            "\n[[channels]]\nname = \"line\"\nplugin = \"line\"\n[channels.settings]\n\
             channel_secret = \"line-secret\"\nchannel_access_token = \"line-token\"\n\
             api_base = \"{}\"\n",
            line_api.url
        ))
        .write(builder.dir());
    hang_up_until_generation(&host, 2.0).await;

    let body = e2e::fixture_of("line", "message_text");
    let status = reqwest::Client::new()
        .post(host.webhook("line"))
        .header(
            "x-line-signature",
            line_adapter::webhook::sign("line-secret", &body),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    until("the LINE reply", || async {
        !line_api.delivered().is_empty()
    })
    .await;
    assert_eq!(line_api.delivered()[0].path, "/v2/bot/message/reply");
    let log = host.log();
    // The new library was loaded once; the one loaded at start-up was not reported again.
    assert_eq!(log.matches("plugin loaded").count(), 2, "{log}");
    assert!(log.contains("added [line]"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loaded_library_replaced_on_disk_is_reported_and_the_loaded_copy_keeps_serving() {
    let graph = fake_graph().await;
    let builder = HostBuilder::new(&graph.url);
    let host = builder.start();
    let loaded = builder
        .dir()
        .join("plugins")
        .join(e2e::messenger_plugin().file_name().unwrap());
    // A new file moved into place, as an upgrade would (never written in place: the
    // old file is mapped).
    let staged = builder.dir().join("staged.so");
    e2e::install(&e2e::messenger_plugin(), &staged);
    std::fs::rename(&staged, &loaded).unwrap();
    hang_up_until_generation(&host, 2.0).await;

    let log = host.log();
    let warnings: Vec<_> = log
        .lines()
        .filter(|l| l.contains("plugin file changed on disk"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(log.contains("changed [], removed []"), "{log}");
    post_signed(&host, &message_from("7650", "after-replacement")).await;
    until("the reply", || async {
        delivered(&graph, "after-replacement") >= 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_down_since_start_up_is_up_at_once_when_a_reload_fixes_its_settings() {
    let graph = fake_graph().await;
    let channel = |new: &str| {
        format!(
            "\n[[channels]]\nname = \"mended\"\nplugin = \"faulty\"\n[channels.settings]\nnew = \"{new}\"\n"
        )
    };
    let builder = HostBuilder::new(&graph.url).plugin_file(e2e::library("faulty_plugin"));
    let host = builder.clone().channels(&channel("error")).start();
    let body = serde_json::json!({ "user": "u1", "text": "hello", "id": "m1" }).to_string();
    let post = || async {
        reqwest::Client::new()
            .post(host.webhook("mended"))
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post().await, 503);

    builder
        .clone()
        .channels(&channel("ok"))
        .write(builder.dir());
    hang_up_until_generation(&host, 2.0).await;
    assert_eq!(post().await, 200, "{}", host.log());
    assert!(host.log().contains("changed [mended]"), "{}", host.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_under_way_when_its_channel_changes_finishes_on_the_old_adapter() {
    let graph = fake_graph().await;
    let builder = HostBuilder::new(&graph.url);
    let host = builder.start();
    // The Graph API holds its answer while the channel is replaced.
    graph.hold();
    post_signed(&host, &message_from("7660", "under-way")).await;
    until("the send to be under way", || async {
        graph.in_flight() >= 1
    })
    .await;
    builder.clone().token_suffix("-new").write(builder.dir());
    hang_up_until_generation(&host, 2.0).await;
    graph.release();
    post_signed(&host, &message_from("7661", "on-the-new-one")).await;

    until("both sends to succeed", || async {
        host.sends("messenger", "ok").await >= 2.0
    })
    .await;
    assert_eq!(token_of(&graph, "under-way"), page_token("1"));
    assert_eq!(
        token_of(&graph, "on-the-new-one"),
        format!("{}-new", page_token("1"))
    );
    let metrics = host.metrics().await;
    assert!(
        !metrics.contains("channel=\"messenger\",outcome=\"shut_down\"")
            && !metrics.contains("channel=\"messenger\",outcome=\"unknown\""),
        "{metrics}"
    );
    assert_eq!(delivered(&graph, "under-way"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_upgraded_under_a_new_file_name_takes_over_its_channels_at_the_reload() {
    let graph = fake_graph().await;
    let builder = HostBuilder::new(&graph.url);
    let host = builder.start();
    let plugins = builder.dir().join("plugins");
    let old = plugins.join(e2e::messenger_plugin().file_name().unwrap());
    let new = plugins.join(format!(
        "{}messenger_adapter_v2{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    e2e::install(&e2e::messenger_plugin(), &new);
    std::fs::remove_file(&old).unwrap();
    hang_up_until_generation(&host, 2.0).await;

    let log = host.log();
    assert!(log.contains("changed [messenger]"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("plugin loaded") && l.contains("messenger_adapter_v2")),
        "{log}"
    );
    post_signed(&host, &message_from("7670", "after-upgrade")).await;
    until("the reply through the new library", || async {
        delivered(&graph, "after-upgrade") >= 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_read_from_a_file_is_read_again_by_a_reload() {
    let graph = fake_graph().await;
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("shop-token");
    std::fs::write(&file, "file-secret-one\n").unwrap();
    let shop = shop_channel(&graph).replace(
        "access_token = \"shop-token\"",
        &format!("access_token = \"${{file:{}}}\"", file.display()),
    );
    let builder = HostBuilder::new(&graph.url).channels(&shop);
    let host = builder.start();
    let body = message_from("7680", "with-the-first-token");
    assert_eq!(post_to(&host, "shop", SHOP_SECRET, &body).await, 200);
    until("the first reply", || async {
        delivered(&graph, "with-the-first-token") >= 1
    })
    .await;
    assert_eq!(token_of(&graph, "with-the-first-token"), "file-secret-one");

    // The secret is rotated in its file; host.toml is untouched.
    std::fs::write(&file, "file-secret-two\n").unwrap();
    hang_up_until_generation(&host, 2.0).await;
    let body = message_from("7680", "with-the-second-token");
    assert_eq!(post_to(&host, "shop", SHOP_SECRET, &body).await, 200);
    until("the reply after the rotation", || async {
        delivered(&graph, "with-the-second-token") >= 1
    })
    .await;
    assert_eq!(token_of(&graph, "with-the-second-token"), "file-secret-two");
    assert!(host.log().contains("changed [shop]"), "{}", host.log());
    let leaked: Vec<_> = host
        .log()
        .lines()
        .filter(|l| l.contains("file-secret"))
        .map(str::to_owned)
        .collect();
    assert!(leaked.is_empty(), "a token in the log: {leaked:?}");
}
