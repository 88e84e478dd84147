//! Starts the real `host-example` binary with a plugins folder and a config file.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use tempfile::TempDir;

static RUNS: AtomicUsize = AtomicUsize::new(0);

use crate::{messenger_plugin, page_token, APP_SECRET, PAGES, VERIFY_TOKEN};

/// How to start a host. Every host it starts shares one folder (plugins, config,
/// event store), so a restarted host finds what the previous one left.
#[derive(Clone)]
pub struct HostBuilder {
    dir: Arc<TempDir>,
    graph_url: String,
    plugins: Vec<PathBuf>,
    listen: String,
    extra_server: String,
    extra_channels: String,
    messenger_enabled: bool,
    messenger_settings: Vec<(String, String)>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    token_suffix: String,
}

impl HostBuilder {
    /// A host with the Messenger plugin, its channel enabled, talking to `graph_url`.
    pub fn new(graph_url: &str) -> Self {
        Self {
            dir: Arc::new(tempfile::tempdir().unwrap()),
            graph_url: graph_url.to_owned(),
            plugins: vec![messenger_plugin()],
            listen: "127.0.0.1:0".to_owned(),
            extra_server: String::new(),
            extra_channels: String::new(),
            messenger_enabled: true,
            messenger_settings: vec![("backoff_base_ms".to_owned(), "20".to_owned())],
            args: Vec::new(),
            token_suffix: String::new(),
            env: vec![
                ("TEST_FB_APP_SECRET".to_owned(), APP_SECRET.to_owned()),
                ("TEST_FB_VERIFY_TOKEN".to_owned(), VERIFY_TOKEN.to_owned()),
            ],
        }
    }

    /// The same host (same folder, so the same queue file) talking to another Graph
    /// API.
    #[must_use]
    pub fn with_graph(&self, graph_url: &str) -> Self {
        Self {
            graph_url: graph_url.to_owned(),
            ..self.clone()
        }
    }

    /// Sets `[server] listen` (default `127.0.0.1:0`).
    #[must_use]
    pub fn listen(mut self, addr: &str) -> Self {
        addr.clone_into(&mut self.listen);
        self
    }

    /// Adds lines to `[server]`.
    #[must_use]
    pub fn server(mut self, lines: &str) -> Self {
        self.extra_server.push_str(lines);
        self.extra_server.push('\n');
        self
    }

    /// Appends TOML after the Messenger channel (more channels).
    #[must_use]
    pub fn channels(mut self, toml: &str) -> Self {
        self.extra_channels.push_str(toml);
        self
    }

    /// Sets a Messenger setting to a TOML value, e.g. `("backoff_base_ms", "5000")`.
    #[must_use]
    pub fn messenger_setting(mut self, key: &str, value: &str) -> Self {
        self.messenger_settings.retain(|(k, _)| k != key);
        self.messenger_settings
            .push((key.to_owned(), value.to_owned()));
        self
    }

    /// Adds a global command-line flag, e.g. `--log-json`.
    #[must_use]
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Whether the Messenger channel is enabled.
    #[must_use]
    pub fn messenger_enabled(mut self, enabled: bool) -> Self {
        self.messenger_enabled = enabled;
        self
    }

    /// Removes an environment variable the config refers to.
    #[must_use]
    pub fn without_env(mut self, name: &str) -> Self {
        self.env.retain(|(k, _)| k != name);
        self
    }

    /// Gives every Page the access token [`page_token`] followed by `suffix`, as a
    /// rotation would.
    #[must_use]
    pub fn token_suffix(mut self, suffix: &str) -> Self {
        suffix.clone_into(&mut self.token_suffix);
        self
    }

    /// Copies another file into the plugins folder.
    #[must_use]
    pub fn plugin_file(mut self, path: PathBuf) -> Self {
        self.plugins.push(path);
        self
    }

    /// The folder every host of this builder runs in (`plugins/`, `host.toml`, the
    /// queue, the logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the plugins folder and `host.toml` into `dir`; returns the config path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let plugins = dir.join("plugins");
        if !plugins.exists() {
            std::fs::create_dir_all(&plugins).unwrap();
            crate::owner_writable(&plugins);
        }
        for (i, plugin) in self.plugins.iter().enumerate() {
            let name = plugin.file_name().unwrap().to_string_lossy().into_owned();
            let name = if i == 0 { name } else { format!("{i}-{name}") };
            let target = plugins.join(name);
            // Never overwrite a library a previous host of this folder loaded.
            if !target.exists() {
                crate::install(plugin, &target);
            }
        }
        let mut pages = String::new();
        for page in PAGES {
            let _ = write!(
                pages,
                "{{ id = \"{page}\", access_token = \"{}{}\" }}, ",
                page_token(page),
                self.token_suffix
            );
        }
        let config = format!(
            r#"[server]
listen = "{listen}"
plugins_dir = "plugins"
{extra_server}
[[channels]]
name = "messenger"
plugin = "messenger"
enabled = {enabled}

[channels.settings]
app_secret = "${{TEST_FB_APP_SECRET}}"
verify_token = "${{TEST_FB_VERIFY_TOKEN}}"
graph_api_base = "{graph}"
graph_api_version = "v25.0"
{settings}pages = [{pages}]
{extra_channels}
"#,
            listen = self.listen,
            extra_server = self.extra_server,
            enabled = self.messenger_enabled,
            graph = self.graph_url,
            settings = self
                .messenger_settings
                .iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect::<String>(),
            extra_channels = self.extra_channels,
        );
        let path = dir.join("host.toml");
        std::fs::write(&path, config).unwrap();
        path
    }

    /// The environment the config's `${VAR}`s need.
    pub fn env(&self) -> impl Iterator<Item = (&str, &str)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Runs `host-example serve` and waits for it to listen.
    pub fn start(&self) -> Host {
        self.try_start()
            .unwrap_or_else(|log| panic!("the host did not start:\n{log}"))
    }

    /// Runs `host-example serve`; `Err` holds its log when it exits before listening.
    pub fn try_start(&self) -> Result<Host, String> {
        let dir = Arc::clone(&self.dir);
        let config = self.write(dir.path());
        let run = RUNS.fetch_add(1, Ordering::SeqCst);
        let log_path = dir.path().join(format!("host-{run}.log"));
        let mut child = Command::new(crate::host_bin())
            .args(&self.args)
            .args(["serve", "--config"])
            .arg(&config)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("cannot start host-example");

        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // `admin on` (with an [admin] listener) comes first.
                if let Some(addr) = line.strip_prefix("admin on ") {
                    let _ = tx.send((false, addr.to_owned()));
                } else if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send((true, addr.to_owned()));
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut admin_url = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((false, admin)) => admin_url = Some(admin),
                Ok((true, url)) => {
                    return Ok(Host {
                        url,
                        admin_url,
                        child,
                        log_path,
                        _dir: dir,
                    })
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(std::fs::read_to_string(&log_path).unwrap_or_default());
                }
            }
        }
    }
}

/// A running host process. Killed when dropped.
pub struct Host {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The `[admin]` listener's `http://127.0.0.1:PORT`, when the config has one.
    pub admin_url: Option<String>,
    child: Child,
    log_path: PathBuf,
    _dir: Arc<TempDir>,
}

impl Host {
    /// The webhook URL of `channel`.
    pub fn webhook(&self, channel: &str) -> String {
        format!("{}/webhooks/{channel}", self.url)
    }

    /// What the host logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal("TERM");
        self.wait_exit(timeout)
    }

    /// Sends signal `name` (`TERM`, `INT`, ...) without waiting for anything.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
    }

    /// Waits (at most `timeout`, a bound for a stuck test) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGHUP: the host reloads its config.
    pub fn hangup(&self) {
        self.signal("HUP");
    }

    /// The host's `/metrics` text (from the `[admin]` listener when there is one).
    pub async fn metrics(&self) -> String {
        let base = self.admin_url.as_ref().unwrap_or(&self.url);
        reqwest::get(format!("{base}/metrics"))
            .await
            .expect("host unreachable")
            .text()
            .await
            .unwrap_or_default()
    }

    /// The value of the metric sample whose line starts with `series` (labels
    /// included), 0 when there is none yet.
    pub async fn metric(&self, series: &str) -> f64 {
        crate::sample(&self.metrics().await, series).unwrap_or(0.0)
    }

    /// `dmflow_sends_total` for `channel` and `outcome` (`ok`, `transient`, ...).
    pub async fn sends(&self, channel: &str, outcome: &str) -> f64 {
        self.metric(&format!(
            "dmflow_sends_total{{channel=\"{channel}\",outcome=\"{outcome}\"}}"
        ))
        .await
    }

    /// The host's `/healthz` answer (from the `[admin]` listener when there is one).
    pub async fn health(&self) -> serde_json::Value {
        let base = self.admin_url.as_ref().unwrap_or(&self.url);
        reqwest::get(format!("{base}/healthz"))
            .await
            .expect("host unreachable")
            .json()
            .await
            .expect("/healthz is JSON")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
