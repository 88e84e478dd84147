//! The config's parsing, substitution and validation.

use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"

[[channels]]
name = "messenger"
plugin = "messenger"

[channels.settings]
app_secret = "${SECRET}"
verify_token = "literal-$$-token"
pages = [{ id = "1", access_token = "${TOKEN}" }]
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "SECRET" => Some("s3cret".to_owned()),
        "TOKEN" => Some("page-token".to_owned()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "host.toml", Path::new("/etc/dmflow"), env)
}

#[test]
fn substitutes_and_resolves() {
    let config = parse(GOOD).unwrap();
    assert_eq!(config.server.plugins_dir, Path::new("/etc/dmflow/plugins"));
    let settings: serde_json::Value =
        serde_json::from_str(&config.channels[0].settings_json()).unwrap();
    assert_eq!(settings["app_secret"], "s3cret");
    assert_eq!(settings["verify_token"], "literal-$-token");
    assert_eq!(settings["pages"][0]["access_token"], "page-token");
    assert!(config.channels[0].enabled);
    assert_eq!(config.queue.path, Path::new("/etc/dmflow/queue.sqlite3"));
    let memory = parse(&format!("{GOOD}\n[queue]\npath = \":memory:\"\n")).unwrap();
    assert!(memory.queue.in_memory());
}

#[test]
fn debug_does_not_show_secrets() {
    let debug = format!("{:?}", parse(GOOD).unwrap());
    assert!(
        !debug.contains("s3cret") && !debug.contains("page-token"),
        "{debug}"
    );
}

#[test]
fn each_error_names_file_and_key() {
    let cases = [
        (GOOD.replace("listen =", "lisen ="), "lisen"),
        (
            GOOD.replace("${SECRET}", "${MISSING}"),
            "channels[0].settings.app_secret",
        ),
        (
            GOOD.replace("${TOKEN}", "${TOKEN"),
            "channels[0].settings.pages[0].access_token",
        ),
        (
            GOOD.replace("name = \"messenger\"", "name = \"../x\""),
            "channels[0].name",
        ),
        (
            GOOD.replace("listen = \"127.0.0.1:8080\"", "listen = \"nowhere\""),
            "listen",
        ),
        (format!("{GOOD}\n[bot]\ncolour = 1\n"), "colour"),
        (
            GOOD.replace("[[channels]]", "[server.extra]\n[[channels]]"),
            "extra",
        ),
        (
            GOOD.replace(
                "listen = \"127.0.0.1:8080\"",
                "listen = \"127.0.0.1:8080\"\nworkers = 0",
            ),
            "server.workers",
        ),
        (
            format!("{GOOD}\n[[channels]]\nname = \"messenger\"\nplugin = \"x\"\n"),
            "channels[1].name",
        ),
        (
            format!("{GOOD}\n[queue]\nremember_secs = 0\n"),
            "queue.remember_secs",
        ),
        (format!("{GOOD}\n[queue]\npaht = \"x\"\n"), "paht"),
        (
            GOOD.replace(
                "listen = \"127.0.0.1:8080\"",
                "listen = \"127.0.0.1:8080\"\nmax_body_bytes = -1",
            ),
            "max_body_bytes",
        ),
    ];
    for (text, key) in cases {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("host.toml"), "{err}");
        assert!(err.contains(key), "expected {key:?} in: {err}");
        assert!(
            !err.contains("s3cret") && !err.contains("page-token"),
            "{err}"
        );
    }
}

#[test]
fn disabled_channels_need_no_secrets() {
    let text = GOOD
        .replace(
            "plugin = \"messenger\"",
            "plugin = \"messenger\"\nenabled = false",
        )
        .replace("${SECRET}", "${MISSING}");
    let config = parse(&text).unwrap();
    assert_eq!(config.enabled_channels().count(), 0);
}

#[test]
fn the_front_door_has_safe_defaults_and_an_optional_admin_listener() {
    let config = parse(GOOD).unwrap();
    assert_eq!(config.server.header_timeout_ms, 10_000);
    assert_eq!(config.server.idle_timeout_ms, 75_000);
    assert_eq!(config.server.max_connections, 4_096);
    assert_eq!(config.server.max_inflight_body_bytes, 64 * 1024 * 1024);
    assert_eq!(config.admin.listen, None);
    let admin = parse(&format!("{GOOD}\n[admin]\nlisten = \"127.0.0.1:9091\"\n")).unwrap();
    assert_eq!(
        admin.admin.listen.as_ref().map(ListenAddr::as_str),
        Some("127.0.0.1:9091")
    );
}

#[test]
fn limits_that_cannot_work_are_refused_by_key() {
    let server = |line: &str| {
        GOOD.replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:8080\"\n{line}"),
        )
    };
    let cases = [
        (server("header_timeout_ms = 0"), "server.header_timeout_ms"),
        (server("idle_timeout_ms = 0"), "server.idle_timeout_ms"),
        (server("max_connections = 0"), "server.max_connections"),
        (
            server("max_body_bytes = 2048\nmax_inflight_body_bytes = 1024"),
            "server.max_inflight_body_bytes",
        ),
        (
            format!("{GOOD}\n[admin]\nlisten = \"127.0.0.1:8080\"\n"),
            "admin.listen",
        ),
        (format!("{GOOD}\n[admin]\nport = 1\n"), "admin.port"),
    ];
    for (text, key) in cases {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(key), "expected {key:?} in: {err}");
    }
}

#[test]
fn no_error_shows_a_value_from_the_file() {
    let settings = |lines: &str| GOOD.replace("app_secret = \"${SECRET}\"", lines);
    let cases = [
        (
            GOOD.replace(
                "listen = \"127.0.0.1:8080\"",
                "listen = \"127.0.0.1:8080\"\nworkers = \"hunter2\"",
            ),
            "line 4, column 11: server.workers: expected usize",
        ),
        (
            GOOD.replace("listen = \"127.0.0.1:8080\"", "listen = 987654321"),
            "server.listen: expected an address as a string",
        ),
        (settings("app_secret = \"hunter2"), "line 10"),
        (settings("app_secret = hunter2"), "line 10"),
        (settings("app_secret = \"hunter2\" hunter2"), "line 10"),
        (
            settings("app_secret = \"a\"\napp_secret = \"hunter2\""),
            "line 11",
        ),
        (
            format!("{GOOD}\n[admin]\nlisten = \"hunter2\"\n"),
            "admin.listen",
        ),
    ];
    for (text, says) in cases {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(says), "expected {says:?} in: {err}");
        assert!(
            !err.contains("hunter2") && !err.contains("987654321"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }
}

#[test]
fn a_missing_file_is_one_line_with_the_cause_once_and_how_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let err = Config::load(&dir.path().join("host.toml")).unwrap_err();
    // As main prints it: the whole chain.
    let printed = format!("{:#}", anyhow::Error::new(err));
    assert!(printed.contains("host.toml: cannot read: "), "{printed}");
    assert_eq!(printed.matches("os error").count(), 1, "{printed}");
    assert!(printed.contains("copy examples/host.toml"), "{printed}");
    assert!(!printed.contains('\n'), "{printed}");
}

#[test]
fn an_empty_file_is_a_config_with_every_default_and_no_channel() {
    let config = parse("").unwrap();
    assert_eq!(config.server.listen.as_str(), "127.0.0.1:8080");
    assert_eq!(config.server.plugins_dir, Path::new("/etc/dmflow/plugins"));
    assert_eq!(config.server.workers, 256);
    assert_eq!(config.channels.len(), 0);
}

#[test]
fn a_config_with_no_enabled_channel_warns_and_one_with_a_channel_does_not() {
    assert!(parse(GOOD).unwrap().warnings.is_empty());
    let disabled = GOOD.replace(
        "plugin = \"messenger\"",
        "plugin = \"messenger\"\nenabled = false",
    );
    for text in ["", disabled.as_str()] {
        let warnings = parse(text).unwrap().warnings;
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("host.toml: channels: no enabled channel"),
            "{warnings:?}"
        );
    }
}

#[test]
fn a_dollar_name_without_braces_is_kept_literally_with_a_warning_naming_the_key() {
    let text = GOOD
        .replace("${SECRET}", "$FB_APP_SECRET")
        .replace("${TOKEN}", "x$_TOKEN");
    let config = parse(&text).unwrap();
    let settings: serde_json::Value =
        serde_json::from_str(&config.channels[0].settings_json()).unwrap();
    assert_eq!(settings["app_secret"], "$FB_APP_SECRET");
    assert_eq!(
        config.warnings.len(),
        2,
        "one per key: {:?}",
        config.warnings
    );
    assert!(
        config.warnings[0].starts_with("host.toml: channels[0].settings.app_secret: "),
        "{:?}",
        config.warnings
    );
    assert!(
        config.warnings[1].starts_with("host.toml: channels[0].settings.pages[0].access_token: "),
        "{:?}",
        config.warnings
    );
    for warning in &config.warnings {
        assert!(
            !warning.contains("FB_APP_SECRET") && !warning.contains("_TOKEN"),
            "{warning}"
        );
    }
}

#[test]
fn a_literal_dollar_and_braced_references_give_no_warning() {
    let text = GOOD.replace("${TOKEN}", "$$TOKEN costs $5");
    let config = parse(&text).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn listen_takes_a_host_name_and_a_port() {
    let listen = |addr: &str| {
        GOOD.replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"{addr}\""),
        )
    };
    for good in ["localhost:8080", "[::1]:0", "host-1.example.com:443"] {
        let config = parse(&listen(good)).unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(config.server.listen.as_str(), good);
    }
    for bad in [
        "localhost",
        "localhost:http",
        ":8080",
        "local host:80",
        "x:65536",
    ] {
        let err = parse(&listen(bad)).unwrap_err().to_string();
        assert!(
            err.starts_with("host.toml: server.listen: must be IP:PORT or HOST:PORT"),
            "{bad}: {err}"
        );
    }
    let admin = parse(&format!("{GOOD}\n[admin]\nlisten = \"localhost:9091\"\n")).unwrap();
    assert_eq!(
        admin.admin.listen.as_ref().map(ListenAddr::as_str),
        Some("localhost:9091")
    );
}

#[tokio::test]
async fn listen_resolves_a_host_name_to_its_first_address() {
    let localhost = ListenAddr("localhost:8080".to_owned());
    let addr = localhost
        .resolve("host.toml", "server.listen")
        .await
        .unwrap();
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_eq!(addr.port(), 8080);
    let ip = ListenAddr("127.0.0.1:0".to_owned());
    let addr = ip.resolve("host.toml", "server.listen").await.unwrap();
    assert_eq!(addr, "127.0.0.1:0".parse().unwrap());
}

#[tokio::test]
async fn a_host_name_that_does_not_resolve_is_an_error_naming_the_key() {
    // `.invalid` never resolves (RFC 6761).
    let nowhere = ListenAddr("nowhere.invalid:8080".to_owned());
    let err = nowhere
        .resolve("host.toml", "admin.listen")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("host.toml: admin.listen: the host name does not resolve"),
        "{err}"
    );
    assert!(!err.contains("nowhere"), "{err}");
}

#[test]
fn a_file_reference_is_filled_from_the_file_beside_the_config_without_its_line_break() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/token"), "from-a-file\n").unwrap();
    let text = GOOD.replace("${TOKEN}", "${file:secrets/token}");
    let config = Config::parse(&text, "host.toml", dir.path(), env).unwrap();
    let settings: serde_json::Value =
        serde_json::from_str(&config.channels[0].settings_json()).unwrap();
    assert_eq!(settings["pages"][0]["access_token"], "from-a-file");
}

#[test]
fn a_missing_or_empty_secret_file_is_an_error_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    for (file, expected) in [
        ("missing", "missing: No such file or directory"),
        ("empty", "empty is empty"),
    ] {
        let text = GOOD.replace("${SECRET}", &format!("${{file:{file}}}"));
        let err = Config::parse(&text, "host.toml", dir.path(), env)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("host.toml: channels[0].settings.app_secret: "),
            "{err}"
        );
        assert!(err.contains(expected), "{err}");
    }
}
