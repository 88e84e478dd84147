//! The versioning rule, measured: the test builds copies of `adapter-api` at other
//! versions, the minimal plugin against each, and a loader against 1.1.0, then checks
//! who loads whom. (abi_stable checks the version and every type layout at load time.)

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use e2e::{library, plugins_listing, workspace_root};

/// Builds `minimal-plugin` (and `loader`) against `adapter-api` at `version` in a
/// copy of the workspace; returns the plugin and the loader.
fn build_against(version: &str) -> (PathBuf, PathBuf) {
    let root = workspace_root();
    let compat = root.join("target/compat");
    let dir = compat.join(format!("v{version}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("adapter-api")).unwrap();

    // The workspace's policy file, with only the crates of this build.
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let start = manifest.find("members = [").unwrap();
    let end = manifest.find("[workspace.package]").unwrap();
    let manifest = format!(
        "{}members = [\"adapter-api\", \"minimal-plugin\", \"loader\"]\n\n{}",
        &manifest[..start],
        &manifest[end..]
    )
    .lines()
    .filter(|l| !l.starts_with("adapter-kit ="))
    .map(|l| {
        if l.starts_with("adapter-api =") {
            format!("adapter-api = {{ path = \"adapter-api\", version = \"{version}\" }}")
        } else {
            l.to_owned()
        }
    })
    .collect::<Vec<_>>()
    .join("\n");
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();

    let api = std::fs::read_to_string(root.join("adapter-api/Cargo.toml"))
        .unwrap()
        .replacen(
            "version = \"1.0.0\"",
            &format!("version = \"{version}\""),
            1,
        );
    std::fs::write(dir.join("adapter-api/Cargo.toml"), api).unwrap();
    std::fs::copy(
        root.join("adapter-api/README.md"),
        dir.join("adapter-api/README.md"),
    )
    .unwrap();
    copy_dir(&root.join("adapter-api/src"), &dir.join("adapter-api/src"));

    copy_dir(
        &root.join("tests/plugins/minimal"),
        &dir.join("minimal-plugin"),
    );
    let plugin = std::fs::read_to_string(dir.join("minimal-plugin/Cargo.toml"))
        .unwrap()
        .replace("../../../adapter-api", "../adapter-api");
    std::fs::write(dir.join("minimal-plugin/Cargo.toml"), plugin).unwrap();

    std::fs::create_dir_all(dir.join("loader/src")).unwrap();
    std::fs::write(
        dir.join("loader/Cargo.toml"),
        "[package]\nname = \"loader\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\nadapter-api = { path = \"../adapter-api\", features = [\"host\"] }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("loader/src/main.rs"),
        "fn main() {\n    for path in std::env::args().skip(1) {\n        \
         match adapter_api::load_plugin(std::path::Path::new(&path)) {\n            \
         Ok(p) => println!(\"ok {}\", p.info.api_version),\n            \
         Err(e) => println!(\"FAIL {e}\"),\n        }\n    }\n}\n",
    )
    .unwrap();

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", compat.join("target"))
        .args([
            "build",
            "--offline",
            "--quiet",
            "-p",
            "minimal-plugin",
            "-p",
            "loader",
        ])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "building against adapter-api {version} failed"
    );

    let out = compat.join("target/debug");
    let plugin = compat.join(format!("minimal-{version}{}", std::env::consts::DLL_SUFFIX));
    let built = out.join(format!(
        "{}minimal_plugin{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    e2e::install(&built, &plugin);
    e2e::owner_writable(&compat);
    let loader = compat.join(format!("loader-{version}{}", std::env::consts::EXE_SUFFIX));
    std::fs::copy(
        out.join(format!("loader{}", std::env::consts::EXE_SUFFIX)),
        &loader,
    )
    .unwrap();
    (plugin, loader)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// What `host-example plugins` (built against 1.0.0) says of one library.
fn host_says(plugin: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    e2e::install(plugin, &dir.path().join(plugin.file_name().unwrap()));
    plugins_listing(dir.path()).1.trim().to_owned()
}

fn loader_says(loader: &Path, plugin: &Path) -> String {
    let output = Command::new(loader).arg(plugin).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn same_major_and_a_newer_or_equal_minor_plugin_loads_everything_else_is_refused() {
    let (plugin_1_1, loader_1_1) = build_against("1.1.0");
    let (plugin_2_0, _) = build_against("2.0.0");
    let plugin_1_0 = library("minimal_plugin");

    // Host 1.0.0.
    assert!(
        host_says(&plugin_1_0).starts_with("ok "),
        "{}",
        host_says(&plugin_1_0)
    );
    let newer_minor = host_says(&plugin_1_1);
    assert!(
        newer_minor.starts_with("ok ") && newer_minor.contains("api=1.1.0"),
        "{newer_minor}"
    );
    let newer_major = host_says(&plugin_2_0);
    assert!(
        newer_major.starts_with("FAIL ")
            && newer_major.contains("incompatible plugin")
            && newer_major.contains("2.0.0"),
        "{newer_major}"
    );
    assert_eq!(newer_major.lines().count(), 1);

    // Host 1.1.0.
    assert_eq!(loader_says(&loader_1_1, &plugin_1_1), "ok 1.1.0");
    let older_minor = loader_says(&loader_1_1, &plugin_1_0);
    assert!(
        older_minor.starts_with("FAIL ") && older_minor.contains("incompatible plugin"),
        "{older_minor}"
    );
    assert_eq!(older_minor.lines().count(), 1);
}
