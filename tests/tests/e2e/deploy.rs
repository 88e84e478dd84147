//! `deploy/dmflow-host.service`: hardened, consistent with `deploy/README.md`, and
//! accepted by `systemd-analyze verify` where that tool is installed.

use std::{collections::HashMap, path::PathBuf, process::Command};

use e2e::{host_bin, workspace_root};

fn unit_path() -> PathBuf {
    workspace_root().join("deploy/dmflow-host.service")
}

/// The unit's `[Service]` settings: each key with its values, in order.
fn service_settings(unit: &str) -> HashMap<String, Vec<String>> {
    let mut settings: HashMap<String, Vec<String>> = HashMap::new();
    let mut section = String::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            if section == "Service" {
                settings
                    .entry(key.trim().to_owned())
                    .or_default()
                    .push(value.trim().to_owned());
            }
        } else {
            panic!("not a unit file line: {line}");
        }
    }
    settings
}

#[test]
fn the_service_unit_is_hardened() {
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    let settings = service_settings(&unit);
    let one = |key: &str| -> &str {
        match settings.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("{key}: expected one value, found {other:?}"),
        }
    };
    assert!(
        one("DynamicUser") == "yes" || settings.contains_key("User"),
        "neither DynamicUser=yes nor a dedicated User="
    );
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("StateDirectory", "dmflow"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestartPreventExitStatus", "2"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
    assert_eq!(one("ReadOnlyPaths"), "/usr/local/lib/dmflow/plugins");
    // `systemctl reload` is the host's config reload.
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert!(
        one("ExecStart").contains(" serve --config /etc/dmflow/host.toml"),
        "{}",
        one("ExecStart")
    );

    // The paths the README installs to are the unit's.
    let readme = std::fs::read_to_string(workspace_root().join("deploy/README.md")).unwrap();
    let exec = one("ExecStart").split(' ').next().unwrap().to_owned();
    for path in [
        exec.as_str(),
        one("ReadOnlyPaths"),
        one("EnvironmentFile"),
        "/etc/dmflow/host.toml",
        "/var/lib/dmflow/queue.sqlite3",
    ] {
        assert!(
            readme.contains(path),
            "deploy/README.md does not name {path}"
        );
    }
}

#[test]
fn systemd_analyze_verify_accepts_the_service_unit() {
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        println!("systemd-analyze is not installed: only the unit's settings are checked");
        // What the verify would have read is still a unit file of [Service] settings.
        assert!(service_settings(&unit).contains_key("ExecStart"));
        return;
    }
    // The same unit, starting the host of this build: verify checks the executable.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dmflow-host.service");
    let host = host_bin();
    let text = unit.replace("/usr/local/bin/host-example", host.to_str().unwrap());
    assert_ne!(
        text, unit,
        "ExecStart does not name /usr/local/bin/host-example"
    );
    std::fs::write(&path, text).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Unknown keys are only warnings: any line about the unit fails the test.
    let about_the_unit: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("dmflow-host.service"))
        .collect();
    assert!(output.status.success(), "{stderr}");
    assert!(about_the_unit.is_empty(), "{stderr}");
}
