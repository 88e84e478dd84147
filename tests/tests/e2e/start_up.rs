//! What the host says at start-up about its config: an error stops it with exit 2
//! and one line naming the file and the key, the cause told once; a warning names
//! the key and lets it serve. No value from the config is shown.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use e2e::{host_bin, library, HostBuilder};

/// A value no message may show.
const SECRET: &str = "hunter2-value";

/// Runs `host-example serve --config CONFIG` until it exits (killed, and the test
/// failed, if it is still running after a minute: it started when it should not
/// have); returns its exit code and what it wrote to stderr.
fn serve_until_exit(config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("stderr");
    let mut child = Command::new(host_bin())
        .args(["serve", "--config"])
        .arg(config)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the host is still running:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        std::fs::read_to_string(&stderr_path).unwrap(),
    )
}

/// Writes `builder`'s config, edited by `edit`, and runs the host on it until it
/// exits.
fn edited_config_exit(
    builder: &HostBuilder,
    edit: impl FnOnce(String) -> String,
) -> (Option<i32>, String) {
    let config = builder.write(builder.dir());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, edit(text)).unwrap();
    let env: Vec<_> = builder.env().collect();
    serve_until_exit(&config, &env)
}

/// The `error: ...` line, checking it is the only one and that nothing follows it.
fn error_line(stderr: &str) -> &str {
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "{stderr}");
    errors[0]
}

fn faulty_channel(name: &str, settings: &str) -> String {
    format!(
        "\n[[channels]]\nname = \"{name}\"\nplugin = \"faulty\"\n[channels.settings]\n{settings}\n"
    )
}

#[test]
fn a_setting_refused_by_an_enabled_channel_stops_start_up_with_exit_2_naming_file_channel_and_key()
{
    let builder = HostBuilder::new("http://127.0.0.1:9")
        .messenger_setting("verfy_token", &format!("\"{SECRET}\""));
    let (code, stderr) = edited_config_exit(&builder, |text| text);
    assert_eq!(code, Some(2), "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("host.toml: channels[0] (messenger): ") && line.contains("verfy_token"),
        "{line}"
    );
    assert!(!stderr.contains(SECRET), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[test]
fn a_disabled_channel_whose_plugin_would_refuse_its_settings_does_not_stop_start_up() {
    let host = HostBuilder::new("http://127.0.0.1:9")
        .plugin_file(library("faulty_plugin"))
        .channels(&faulty_channel("off", "new = \"fail\"").replace(
            "plugin = \"faulty\"\n",
            "plugin = \"faulty\"\nenabled = false\n",
        ))
        .try_start();
    assert!(host.is_ok(), "{}", host.err().unwrap_or_default());
}

#[test]
fn a_missing_config_file_is_one_line_with_the_cause_once_and_how_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = serve_until_exit(&dir.path().join("host.toml"), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    let line = error_line(&stderr);
    assert!(line.contains("host.toml: cannot read: "), "{line}");
    assert_eq!(line.matches("os error").count(), 1, "{line}");
    assert!(line.contains("copy examples/host.toml"), "{line}");
}

#[test]
fn a_channel_naming_a_plugin_that_is_not_there_is_refused_naming_the_file_and_key() {
    let builder = HostBuilder::new("http://127.0.0.1:9")
        .channels("\n[[channels]]\nname = \"fb\"\nplugin = \"facebook\"\n");
    let (code, stderr) = edited_config_exit(&builder, |text| text);
    assert_eq!(code, Some(2), "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("host.toml: channels[1].plugin: no plugin \"facebook\""),
        "{line}"
    );
}

#[test]
fn a_plugins_folder_that_cannot_be_read_is_refused_naming_server_plugins_dir_and_the_cause_once() {
    let builder = HostBuilder::new("http://127.0.0.1:9");
    let (code, stderr) = edited_config_exit(&builder, |text| {
        text.replace(
            "plugins_dir = \"plugins\"",
            "plugins_dir = \"no-such-folder\"",
        )
    });
    assert_eq!(code, Some(2), "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("host.toml: server.plugins_dir: ")
            && line.contains("cannot read the plugins folder"),
        "{line}"
    );
    assert_eq!(line.matches("os error").count(), 1, "{line}");
}

#[test]
fn a_listen_host_name_that_does_not_resolve_is_refused_naming_server_listen() {
    // `.invalid` never resolves.
    let builder = HostBuilder::new("http://127.0.0.1:9").listen("nowhere.invalid:0");
    let (code, stderr) = edited_config_exit(&builder, |text| text);
    assert_eq!(code, Some(2), "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("host.toml: server.listen: the host name does not resolve"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_takes_a_host_name() {
    let host = HostBuilder::new("http://127.0.0.1:9")
        .listen("localhost:0")
        .start();
    let status = reqwest::get(format!("{}/healthz", host.url))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200, "{}", host.log());
}

#[test]
fn a_config_with_no_enabled_channel_serves_with_a_warning() {
    let host = HostBuilder::new("http://127.0.0.1:9")
        .messenger_enabled(false)
        .start();
    let log = host.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("channels: no enabled channel")),
        "{log}"
    );
}

#[test]
fn a_dollar_name_without_braces_in_a_setting_is_served_with_a_warning_naming_the_key() {
    let host = HostBuilder::new("http://127.0.0.1:9")
        .plugin_file(library("faulty_plugin"))
        .channels(&faulty_channel("dollar", "token = \"$FAULTY_TOKEN\""))
        .start();
    let log = host.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("channels[1].settings.token: a $ followed by a name is taken literally")),
        "{log}"
    );
    assert!(!log.contains("FAULTY_TOKEN"), "{log}");
    assert!(!log.contains("no enabled channel"), "{log}");
}
