//! `[server]`: where and how webhooks are served, and the `listen` addresses.

use std::{fmt, net::SocketAddr, path::PathBuf};

use serde::Deserialize;

/// `[server]`; every key has a default, so the table may be left out.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, `IP:PORT` or `HOST:PORT` (a host name is resolved at
    /// start-up, its first address used); port 0 picks a free port (printed at
    /// start-up). Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: ListenAddr,
    /// Folder of plugin libraries, relative to the config file. Default `plugins`.
    #[serde(default = "default_plugins_dir")]
    pub plugins_dir: PathBuf,
    /// Largest webhook body accepted, in bytes. Default 1 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Events accepted but not yet processed, in all, before webhooks get 503 (Meta
    /// retries them). Default 10,000.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Conversations processed at the same time; one conversation's events are
    /// always processed one after another, in order. Default 256.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// How long one send may take, retries included, in milliseconds. Default 60,000.
    #[serde(default = "default_send_timeout_ms")]
    pub send_timeout_ms: u64,
    /// How long shutdown waits for queued events and in-flight sends. Default 10,000 ms.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// How long a client may take to send a webhook's body before getting 408, in
    /// milliseconds (a body trickled in byte by byte holds a connection). Default 10,000.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// A connection whose request head (request line and headers) is not complete
    /// this long after it opened, or after its first byte when kept alive, is closed,
    /// in milliseconds. Default 10,000.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// A kept-alive connection with no request for this long is closed, in
    /// milliseconds. Default 75,000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Connections open at once; more wait in the listen backlog until one closes.
    /// The open-file limit is raised to fit. Default 4,096.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Body bytes being read at once, across all requests; past it a new body gets
    /// 503 at once. At least `max_body_bytes`. Default 64 MiB.
    #[serde(default = "default_max_inflight_body_bytes")]
    pub max_inflight_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            plugins_dir: default_plugins_dir(),
            max_body_bytes: default_max_body_bytes(),
            queue_capacity: default_queue_capacity(),
            workers: default_workers(),
            send_timeout_ms: default_send_timeout_ms(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
            body_timeout_ms: default_body_timeout_ms(),
            header_timeout_ms: default_header_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_connections: default_max_connections(),
            max_inflight_body_bytes: default_max_inflight_body_bytes(),
        }
    }
}

fn default_listen() -> ListenAddr {
    ListenAddr("127.0.0.1:8080".to_owned())
}
fn default_body_timeout_ms() -> u64 {
    10_000
}
fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_idle_timeout_ms() -> u64 {
    75_000
}
fn default_max_connections() -> usize {
    4_096
}
fn default_max_inflight_body_bytes() -> usize {
    64 * 1024 * 1024
}

fn default_plugins_dir() -> PathBuf {
    PathBuf::from("plugins")
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_queue_capacity() -> usize {
    10_000
}
fn default_workers() -> usize {
    256
}
fn default_send_timeout_ms() -> u64 {
    60_000
}
fn default_shutdown_grace_ms() -> u64 {
    10_000
}

/// `listen`: `IP:PORT`, or `HOST:PORT` resolved when the host starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr(pub(super) String);

impl ListenAddr {
    /// The address as written in the config.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it has the shape `HOST:PORT` (an IPv6 address in brackets).
    pub(super) fn check(&self) -> Result<(), String> {
        if self.0.parse::<SocketAddr>().is_ok() {
            return Ok(());
        }
        let shape = "must be IP:PORT or HOST:PORT, e.g. 127.0.0.1:8080 or localhost:8080";
        let Some((host, port)) = self.0.rsplit_once(':') else {
            return Err(shape.to_owned());
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !host_ok || port.parse::<u16>().is_err() {
            return Err(shape.to_owned());
        }
        Ok(())
    }

    /// The address to bind: the IP itself, or the host name's first address.
    /// `key` names the setting in the error.
    pub async fn resolve(&self, file: &str, key: &str) -> anyhow::Result<SocketAddr> {
        if let Ok(addr) = self.0.parse() {
            return Ok(addr);
        }
        // The resolver's message does not repeat the name.
        let mut addrs = tokio::net::lookup_host(self.0.as_str())
            .await
            .map_err(|err| {
                anyhow::anyhow!("{file}: {key}: the host name does not resolve: {err}")
            })?;
        addrs
            .next()
            .ok_or_else(|| anyhow::anyhow!("{file}: {key}: the host name has no address"))
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ListenAddr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address as a string, IP:PORT or HOST:PORT")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ListenAddr, E> {
                Ok(ListenAddr(v.to_owned()))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
