//! Channel operations from the command line: `host-example <channel> <op>...`.

use std::process::{Command, Output};

use e2e::{fake_graph, host_bin, page_token, HostBuilder};
use serde_json::{json, Value};

fn run(builder: &HostBuilder, args: &[&str], dir: &std::path::Path) -> Output {
    let config = builder.write(dir);
    Command::new(host_bin())
        .args(args)
        .arg("--config")
        .arg(&config)
        .env_clear()
        .envs(builder.env())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn profile_set_from_a_file_reaches_the_graph_api() {
    let graph = fake_graph().await;
    let builder = HostBuilder::new(&graph.url);
    let dir = tempfile::tempdir().unwrap();
    let profile = json!({
        "page_id": "682498302938465",
        "greeting": [{ "locale": "default", "text": "Hi {{user_first_name}}" }],
        "get_started": { "payload": "GET_STARTED" },
    });
    let file = dir.path().join("profile.json");
    std::fs::write(&file, profile.to_string()).unwrap();

    let output = tokio::task::block_in_place(|| {
        run(
            &builder,
            &[
                "messenger",
                "profile",
                "set",
                "--file",
                file.to_str().unwrap(),
            ],
            dir.path(),
        )
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed, json!({ "result": "success" }));

    let calls = graph.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "POST");
    assert_eq!(calls[0].path, "/v25.0/me/messenger_profile");
    assert_eq!(
        calls[0].query["access_token"],
        page_token("682498302938465")
    );
    assert_eq!(
        calls[0].body,
        json!({
            "greeting": [{ "locale": "default", "text": "Hi {{user_first_name}}" }],
            "get_started": { "payload": "GET_STARTED" },
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_and_refusing_operations() {
    let graph = fake_graph().await;
    let builder = HostBuilder::new(&graph.url);
    let dir = tempfile::tempdir().unwrap();
    let listing = tokio::task::block_in_place(|| run(&builder, &["messenger"], dir.path()));
    assert!(listing.status.success());
    let ops: Value = serde_json::from_slice(&listing.stdout).unwrap();
    for op in [
        "attachment.upload",
        "profile.set",
        "handover.pass",
        "personas.create",
    ] {
        assert!(ops[op].is_string(), "{op} missing from {ops}");
    }

    let unknown =
        tokio::task::block_in_place(|| run(&builder, &["messenger", "fly", "away"], dir.path()));
    assert_eq!(unknown.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("fly.away") && stderr.contains("unknown operation"),
        "{stderr}"
    );

    let no_channel =
        tokio::task::block_in_place(|| run(&builder, &["telegram", "ops"], dir.path()));
    assert_eq!(no_channel.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_channel.stderr).contains("no channel \"telegram\""));
    assert!(graph.calls().is_empty());
}

#[test]
fn a_typo_of_a_subcommand_is_a_usage_error_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    // With no config file there, and with one naming other channels.
    let builder = HostBuilder::new("http://127.0.0.1:9");
    let config = builder.write(dir.path());
    for args in [
        vec!["serv"],
        vec!["sever", "--config", config.to_str().unwrap()],
    ] {
        let output = Command::new(host_bin())
            .args(&args)
            .current_dir(dir.path().join("plugins"))
            .env_clear()
            .envs(builder.env())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("did you mean 'serve'?"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("Usage: host-example"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_word_that_is_neither_a_subcommand_nor_a_channel_is_a_usage_error_naming_the_channels() {
    let builder = HostBuilder::new("http://127.0.0.1:9");
    let dir = tempfile::tempdir().unwrap();
    let output = run(&builder, &["telegram", "send"], dir.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("'telegram' is neither a subcommand nor a channel")
            && stderr.contains("(messenger)"),
        "{stderr}"
    );
}
