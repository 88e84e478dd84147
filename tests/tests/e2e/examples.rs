//! `examples/host.toml`, the config the README's walkthrough starts from: it loads
//! with the variables the README sets, its LINE block loads once uncommented, and a
//! host started from it answers the handshake and replies through the plugin.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use e2e::{fake_graph, host_bin, messenger_plugin, sign, workspace_root};
use host_example::config::Config;

use crate::delivery::until;

/// The variables the example reads, with values for the tests.
const ENV: &[(&str, &str)] = &[
    ("FB_APP_SECRET", "example-app-secret"),
    ("FB_VERIFY_TOKEN", "example-verify-token"),
    ("FB_PAGE_ACCESS_TOKEN", "example-page-token"),
    ("LINE_CHANNEL_SECRET", "example-line-secret"),
    ("LINE_CHANNEL_ACCESS_TOKEN", "example-line-token"),
];

fn example_path() -> PathBuf {
    workspace_root().join("examples/host.toml")
}

fn example() -> String {
    std::fs::read_to_string(example_path()).unwrap()
}

fn env(name: &str) -> Option<String> {
    ENV.iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| (*v).to_owned())
}

fn parse(text: &str) -> Config {
    Config::parse(
        text,
        "examples/host.toml",
        &workspace_root().join("examples"),
        env,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The `${NAME}`s of the lines that are not comments.
fn variables(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split("${").skip(1))
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .collect()
}

/// The example with its commented-out LINE channel turned on.
fn with_line(text: &str) -> String {
    let start = text
        .find("# [[channels]]")
        .expect("a commented LINE channel");
    let block: String = text[start..]
        .lines()
        .map(|l| l.strip_prefix("# ").or(l.strip_prefix('#')).unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    format!("{}{block}", &text[..start])
}

#[test]
fn the_example_config_loads_with_the_variables_the_readme_sets() {
    let text = example();
    let config = parse(&text);
    let enabled: Vec<_> = config.enabled_channels().map(|c| c.name.as_str()).collect();
    assert_eq!(enabled, ["messenger"]);
    let settings = &config.channels[0].settings;
    assert_eq!(settings["app_secret"].as_str(), Some("example-app-secret"));
    assert_eq!(
        settings["verify_token"].as_str(),
        Some("example-verify-token")
    );
    assert_eq!(
        settings["pages"][0]["access_token"].as_str(),
        Some("example-page-token")
    );
    assert_eq!(
        config.server.plugins_dir,
        workspace_root().join("examples/plugins")
    );

    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let variables = variables(&text);
    assert_eq!(variables.len(), 3, "{variables:?}");
    for name in variables {
        assert!(
            readme.contains(&format!("{name}=")),
            "the README does not say to set {name}"
        );
    }
    assert!(readme.contains("cp examples/host.toml ."));
}

#[test]
fn the_line_channel_of_the_example_config_loads_once_uncommented() {
    let config = parse(&with_line(&example()));
    let enabled: Vec<_> = config
        .enabled_channels()
        .map(|c| (c.name.as_str(), c.plugin.as_str()))
        .collect();
    assert_eq!(enabled, [("messenger", "messenger"), ("line", "line")]);
    assert_eq!(
        config.channels[1].settings["channel_secret"].as_str(),
        Some("example-line-secret")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_started_from_the_example_config_answers_and_replies() {
    let graph = fake_graph().await;
    let dir = tempfile::tempdir().unwrap();
    // The walkthrough's steps: the example beside a plugins folder, pointed at the
    // sandbox; only the port differs, so that tests can run side by side.
    let text = example().replace("127.0.0.1:8080", "127.0.0.1:0").replace(
        "# graph_api_base = \"http://127.0.0.1:9999\"",
        &format!("graph_api_base = \"{}\"", graph.url),
    );
    assert!(
        text.contains(&graph.url),
        "no graph_api_base line to uncomment"
    );
    let config = dir.path().join("host.toml");
    std::fs::write(&config, text).unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    e2e::owner_writable(&plugins);
    let plugin = messenger_plugin();
    e2e::install(&plugin, &plugins.join(plugin.file_name().unwrap()));

    let mut child = Command::new(host_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .env_clear()
        .envs(ENV.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = listening_url(child.stdout.take().unwrap());
    let served = async {
        let url = url.expect("the host did not start");
        let webhook = format!("{url}/webhooks/messenger");
        let handshake = format!(
            "{webhook}?hub.mode=subscribe&hub.challenge=42&hub.verify_token=example-verify-token"
        );
        let challenge = reqwest::get(&handshake).await.unwrap().text().await;
        // The README's example webhook, to the example's Page.
        let body = br#"{"object":"page","entry":[{"id":"682498302938465","time":1,"messaging":[{"sender":{"id":"123"},"recipient":{"id":"682498302938465"},"timestamp":1,"message":{"mid":"m_1","text":"hello"}}]}]}"#.to_vec();
        let status = reqwest::Client::new()
            .post(&webhook)
            .header("x-hub-signature-256", sign("example-app-secret", &body))
            .body(body)
            .send()
            .await
            .unwrap()
            .status();
        if status == 200 {
            // The reply, then the host's queue empty: nothing more is coming.
            until("the reply", || async { !graph.calls().is_empty() }).await;
            until("every accepted event processed", || async {
                let metrics = reqwest::get(format!("{url}/metrics")).await.unwrap();
                e2e::sample(&metrics.text().await.unwrap(), "dmflow_queue_depth") == Some(0.0)
            })
            .await;
        }
        (challenge.unwrap(), status.as_u16())
    }
    .await;
    let calls = graph.calls();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(served, ("42".to_owned(), 200));
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0].query["access_token"], "example-page-token");
    assert_eq!(calls[0].text(), Some("hello"));
    assert!(dir.path().join("queue.sqlite3").is_file());
}

/// The `http://ADDR` the host prints once it listens, within 20 s.
fn listening_url(stdout: impl std::io::Read + Send + 'static) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("listening on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20)).ok()
}
