//! Which crate may depend on which: the host knows plugins only through the
//! contract, and the plugins are built and tested without the host.

use std::process::Command;

use e2e::workspace_root;

/// The workspace's packages and, for each, the names of its dependencies of every
/// kind (normal, dev, build), from `cargo metadata`.
fn dependencies() -> Vec<(String, Vec<String>)> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            let names = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect();
            (package["name"].as_str().unwrap().to_owned(), names)
        })
        .collect()
}

fn of(name: &str) -> Vec<String> {
    dependencies()
        .into_iter()
        .find(|(package, _)| package == name)
        .unwrap_or_else(|| panic!("no package {name}"))
        .1
}

#[test]
fn the_host_depends_on_the_contract_and_not_on_the_plugin_kit() {
    let host = of("host-example");
    assert!(host.iter().any(|d| d == "adapter-api"), "{host:?}");
    assert!(!host.iter().any(|d| d == "adapter-kit"), "{host:?}");
}

#[test]
fn no_plugin_depends_on_the_host_not_even_in_its_tests() {
    for plugin in ["messenger-adapter", "line-adapter", "echo-adapter"] {
        let dependencies = of(plugin);
        assert!(
            dependencies.iter().any(|d| d == "adapter-kit"),
            "{plugin}: {dependencies:?}"
        );
        assert!(
            !dependencies.iter().any(|d| d == "host-example"),
            "{plugin}: {dependencies:?}"
        );
    }
}
