//! A throw-away PostgreSQL cluster on loopback, for tests and benchmarks of the
//! shared queue: `initdb` into a temporary folder, started with `pg_ctl` on a free
//! port of 127.0.0.1, stopped and removed when dropped. PostgreSQL refuses to run as
//! root, so as root it runs as the `postgres` user the distribution's package makes.
//! `scripts/ensure-postgres.sh` installs the server when it is missing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// A running cluster. Stopped (at once) and removed when dropped.
pub struct PgCluster {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

/// Whether the server's durability is kept (benchmarks) or traded for speed (tests,
/// which kill hosts, never the database).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync` on, as in production.
    Full,
    /// `fsync` off.
    None,
}

impl PgCluster {
    /// Creates and starts a cluster.
    pub fn start(durability: Durability) -> Result<Self, String> {
        let bin = bin_dir().ok_or(
            "PostgreSQL's server programs (initdb, pg_ctl) are not installed: run \
             scripts/ensure-postgres.sh",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("dmflow-pg-")
            .tempdir()
            .map_err(|e| format!("cannot make a folder for the cluster: {e}"))?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|e| e.to_string())?;
        give_to_server_user(dir.path())?;
        give_to_server_user(&data)?;
        run(
            &bin,
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        let fsync = match durability {
            Durability::Full => "on",
            Durability::None => "off",
        };
        let log = data.join("server.log");
        // A port found free may be taken before the server binds it (another test
        // starting a cluster): a few tries, each on a new one.
        let mut tries = 0;
        let port = loop {
            let port = free_port()?;
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync={fsync} -c max_connections=200",
                path(&data)
            );
            let started = run(
                &bin,
                "pg_ctl",
                &[
                    "-D",
                    path(&data),
                    "-l",
                    path(&log),
                    "-o",
                    &options,
                    "-w",
                    "start",
                ],
            );
            match started {
                Ok(()) => break port,
                Err(_) if tries < 3 => tries += 1,
                Err(err) => return Err(err),
            }
        };
        Ok(Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            bin,
            data,
            _dir: dir,
        })
    }

    /// A new, empty database in the cluster; its url.
    pub fn database(&self, name: &str) -> Result<String, String> {
        run(
            &self.bin,
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ],
        )?;
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = run(
            &self.bin,
            "pg_ctl",
            &["-D", path(&self.data), "-m", "immediate", "-w", "stop"],
        );
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// The folder of `initdb` and `pg_ctl`: `$DMFLOW_PG_BIN`, the newest
/// `/usr/lib/postgresql/*/bin` (Debian's layout), or the `PATH`.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DMFLOW_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}

#[cfg(unix)]
fn is_root() -> bool {
    // The owner of this process's own /proc entry is its effective user.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[cfg(not(unix))]
fn is_root() -> bool {
    false
}

/// As root, hands `dir` to the `postgres` user, who runs the server.
fn give_to_server_user(dir: &Path) -> Result<(), String> {
    if !is_root() {
        return Ok(());
    }
    let status = Command::new("chown")
        .args(["postgres:", path(dir)])
        .status()
        .map_err(|e| format!("cannot run chown: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(
            "cannot give the cluster's folder to the postgres user (is PostgreSQL installed?)"
                .to_owned(),
        )
    }
}

/// Runs one of PostgreSQL's programs, as `postgres` when this is root.
fn run(bin: &Path, program: &str, args: &[&str]) -> Result<(), String> {
    let program_path = bin.join(program);
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&program_path);
        c
    } else {
        Command::new(&program_path)
    };
    let output = command
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A port of 127.0.0.1 nothing listens on now.
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}
