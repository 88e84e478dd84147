//! A throw-away PostgreSQL cluster on loopback for the shared-queue benchmarks, with
//! `fsync` on as in production: `initdb` into a temporary folder, started with
//! `pg_ctl` on a free port of 127.0.0.1 (pinned to a CPU when asked), stopped and
//! removed when dropped. As root the server runs as the `postgres` user.
//! (`host_example::pg_cluster` does the same for the tests; the benchmarks also pin
//! the server and count its CPU.)

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

/// A running cluster. Stopped (at once) and removed when dropped.
pub struct Postgres {
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// Creates and starts a cluster, its processes pinned to `cpu` when given.
    pub fn start(cpu: Option<usize>) -> anyhow::Result<Self> {
        let bin = bin_dir().context(
            "PostgreSQL's server programs (initdb, pg_ctl) are not installed: run \
             scripts/ensure-postgres.sh, or set DMFLOW_PG_BIN",
        )?;
        let dir = tempfile::Builder::new().prefix("bench-pg-").tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        give_to_server_user(dir.path())?;
        give_to_server_user(&data)?;
        run(
            None,
            &bin.join("initdb"),
            &[
                "-D",
                path(&data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200",
            path(&data)
        );
        let log = data.join("server.log");
        run(
            cpu,
            &bin.join("pg_ctl"),
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
        )?;
        Ok(Self {
            port,
            bin,
            data,
            _dir: dir,
        })
    }

    /// A new, empty database; its url.
    pub fn database(&self, name: &str) -> anyhow::Result<String> {
        self.sql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// Runs `sql` in database `db` with `psql`; its rows, one a line, columns
    /// separated by a space.
    pub fn sql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let output = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db, "-At", "-F", " ", "-c", sql])
            .output()?;
        if !output.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// The server's processes: the postmaster and its children (a backend for each
    /// connection, the writers).
    pub fn pids(&self) -> Vec<u32> {
        let Some(postmaster) = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<u32>().ok())
        else {
            return Vec::new();
        };
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if crate::proc::stat_field(pid, 1) == Some(u64::from(postmaster)) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = run(
            None,
            &self.bin.join("pg_ctl"),
            &["-D", path(&self.data), "-m", "immediate", "-w", "stop"],
        );
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// `$DMFLOW_PG_BIN`, or the newest `/usr/lib/postgresql/*/bin` (Debian's layout).
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DMFLOW_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // The owner of this process's own /proc entry is its effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// As root, hands `dir` to the `postgres` user, who runs the server.
fn give_to_server_user(dir: &Path) -> anyhow::Result<()> {
    if is_root()
        && !Command::new("chown")
            .arg("postgres:")
            .arg(dir)
            .status()?
            .success()
    {
        bail!("cannot give {} to the postgres user", dir.display());
    }
    Ok(())
}

/// Runs one of the server's programs, as `postgres` when this is root, pinned to
/// `cpu` when given (the server's processes inherit it).
fn run(cpu: Option<usize>, program: &Path, args: &[&str]) -> anyhow::Result<()> {
    let mut argv: Vec<String> = Vec::new();
    if let Some(cpu) = cpu {
        argv.extend(["taskset".to_owned(), "-c".to_owned(), cpu.to_string()]);
    }
    if is_root() {
        argv.extend(["runuser", "-u", "postgres", "--"].map(str::to_owned));
    }
    argv.push(path(program).to_owned());
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let output = Command::new(&argv[0])
        .args(&argv[1..])
        .env("LC_ALL", "C")
        .output()?;
    if !output.status.success() {
        bail!(
            "{} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
