//! Test support for the end-to-end suite: builds the real host binary and plugin
//! library, starts the host as a process with a config of the test's making, and
//! fakes the Graph API on 127.0.0.1 with the host's own sandbox server.

pub mod host;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use crate::host::{Host, HostBuilder};
pub use sandbox::{GraphCall, SandboxGraph as FakeGraph, Scripted};

/// Starts a fake Graph API (the host's sandbox) on 127.0.0.1.
pub async fn fake_graph() -> FakeGraph {
    FakeGraph::start()
        .await
        .expect("cannot start the fake Graph API")
}

/// The app secret every test host is configured with.
pub const APP_SECRET: &str = "test-app-secret";
/// The verify token every test host is configured with.
pub const VERIFY_TOKEN: &str = "test-verify-token";
/// The Pages every test host serves: the ids used by the fixtures.
pub const PAGES: &[&str] = &[
    "682498302938465",
    "1895382890692545",
    "189538289069256",
    "1",
    "0",
];

/// The access token configured for `page`.
pub fn page_token(page: &str) -> String {
    format!("token-for-{page}")
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn profile_dir() -> PathBuf {
    target_dir().join(if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    })
}

/// Builds the workspace's binaries and plugin libraries once per test run (cargo
/// reuses what `cargo test` already compiled), and returns the profile folder.
pub fn built() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut command = Command::new(cargo);
        command
            .current_dir(workspace_root())
            .args(["build", "--workspace", "--quiet"]);
        if !cfg!(debug_assertions) {
            command.arg("--release");
        }
        let status = command.status().expect("cannot run cargo build");
        assert!(status.success(), "cargo build --workspace failed");
        profile_dir()
    })
}

/// The host binary.
pub fn host_bin() -> PathBuf {
    built().join(format!("host-example{}", std::env::consts::EXE_SUFFIX))
}

/// The Messenger plugin library.
pub fn messenger_plugin() -> PathBuf {
    library("messenger_adapter")
}

/// A library of the build by crate name, e.g. `line_adapter` or `faulty_plugin`.
pub fn library(name: &str) -> PathBuf {
    built().join(format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

/// Copies library `from` to `to` as an administrator installs a plugin: writable by
/// its owner only, whatever the umask the tests run under (the host refuses a
/// library its group or others may write).
pub fn install(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    owner_writable(to);
}

/// Sets `path` (a file or a folder) to mode 0755 on Unix: writable by its owner only.
pub fn owner_writable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The bytes of fixture `name` (without `.json`) from `tests/fixtures/messenger/`.
pub fn fixture(name: &str) -> Vec<u8> {
    fixture_of("messenger", name)
}

/// The bytes of fixture `name` of `channel` (`tests/fixtures/{channel}/{name}.json`).
pub fn fixture_of(channel: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(channel)
        .join(format!("{name}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `sha256=<hex>` of `body` under `secret`, as Meta sends it.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The `appsecret_proof` Meta expects for `token`.
pub fn appsecret_proof(token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(APP_SECRET.as_bytes()).expect("any key");
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The value of the sample whose line starts with `series` in Prometheus text.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Runs `host-example plugins --dir dir`: its exit code and stdout.
pub fn plugins_listing(dir: &Path) -> (Option<i32>, String) {
    let output = std::process::Command::new(host_bin())
        .args(["plugins", "--dir"])
        .arg(dir)
        .output()
        .expect("cannot run host-example");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}
