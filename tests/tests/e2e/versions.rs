//! The versioning rule, measured: the test builds copies of `adapter-api` at other
//! versions, the minimal plugin against each, and a loader against each, then checks
//! who loads whom. (abi_stable checks the version and every type layout at load time.)
//!
//! The 1.1.0 copy is a real minor version: its root module gains a field after the
//! last field of the 1.0 prefix, the plugin built against it fills that field, and its
//! loader calls it. So the rule "a newer minor may only add" is exercised with
//! something added.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use e2e::{library, plugins_listing, workspace_root};

/// What the field added in 1.1.0 returns in the minimal plugin built against 1.1.0.
const GREETING: &str = "hello from a field added in 1.1";

/// A change to one copied file: `find` must occur in it exactly once.
struct Patch {
    file: &'static str,
    find: &'static str,
    replace_with: String,
}

/// The loader built against every version: loads each library named on its command
/// line and prints one line per library.
const LOADER: &str = r#"fn main() {
    for path in std::env::args().skip(1) {
        match adapter_api::load_plugin(std::path::Path::new(&path)) {
            Ok(p) => println!("ok {}", p.info.api_version),
            Err(e) => println!("FAIL {e}"),
        }
    }
}
"#;

/// What makes the 1.1.0 copy a minor version that adds something: a field after
/// `new_adapter` in the root module (read as an `Option`, since a plugin built against
/// 1.0 lacks it), a host-side accessor for it, the plugin filling it with a function
/// that returns [`GREETING`], and the loader printing what it returns.
fn add_a_field() -> Vec<Patch> {
    vec![
        Patch {
            file: "adapter-api/src/module.rs",
            find: "    ) -> RResult<ChannelAdapterBox, AdapterError>,\n}\n",
            replace_with: "    ) -> RResult<ChannelAdapterBox, AdapterError>,

    /// Added in 1.1.0: a greeting. Plugins built against 1.0 do not have it.
    #[sabi(missing_field(option))]
    pub greeting: extern \"C\" fn() -> RString,
}
"
            .to_owned(),
        },
        Patch {
            file: "adapter-api/src/loader.rs",
            find: "\nimpl LoadedPlugin {\n",
            replace_with: "
impl LoadedPlugin {
    /// Calls the plugin's `greeting` (added in 1.1.0), if it has one.
    pub fn greeting(&self) -> Option<String> {
        self.module.greeting().map(|greeting| greeting().into_string())
    }

"
            .to_owned(),
        },
        Patch {
            file: "minimal-plugin/src/lib.rs",
            find: "AdapterPlugin { info, new_adapter }.leak_into_prefix()",
            replace_with: "AdapterPlugin { info, new_adapter, greeting }.leak_into_prefix()"
                .to_owned(),
        },
        Patch {
            file: "minimal-plugin/src/lib.rs",
            find: "\nstruct Minimal;\n",
            replace_with: format!(
                "
extern \"C\" fn greeting() -> adapter_api::abi_stable::std_types::RString {{
    {GREETING:?}.into()
}}

struct Minimal;
"
            ),
        },
        Patch {
            file: "loader/src/main.rs",
            find: "Ok(p) => println!(\"ok {}\", p.info.api_version),",
            replace_with: "Ok(p) => match p.greeting() {
                Some(greeting) => println!(\"ok {} greeting: {greeting}\", p.info.api_version),
                None => println!(\"ok {} without a greeting\", p.info.api_version),
            },"
            .to_owned(),
        },
    ]
}

/// Replaces the one occurrence of `find` in `text`; panics when there is none or more
/// than one, so that a change in the copied source fails the test instead of quietly
/// building something else.
fn replace_once(text: &str, find: &str, replace_with: &str, what: &str) -> String {
    let found = text.matches(find).count();
    assert_eq!(
        found, 1,
        "{what}: expected exactly one {find:?}, found {found}; the source changed, update the patch"
    );
    text.replacen(find, replace_with, 1)
}

/// Applies `patch` to its file under `dir`.
fn apply(dir: &Path, patch: &Patch) {
    let path = dir.join(patch.file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let patched = replace_once(&text, patch.find, &patch.replace_with, patch.file);
    std::fs::write(&path, patched).unwrap();
}

/// Builds `minimal-plugin` and `loader` against `adapter-api` at `version` in a copy
/// of the workspace, after applying `patches`; returns the plugin and the loader.
fn build_against(version: &str, patches: &[Patch]) -> (PathBuf, PathBuf) {
    let root = workspace_root();
    let compat = root.join("target/compat");
    let dir = compat.join(format!("v{version}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("adapter-api")).unwrap();

    // The workspace's policy file, with only the crates of this build.
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let start = manifest
        .find("members = [")
        .expect("Cargo.toml: no members");
    let end = manifest
        .find("[workspace.package]")
        .expect("Cargo.toml: no [workspace.package]");
    let manifest = format!(
        "{}members = [\"adapter-api\", \"minimal-plugin\", \"loader\"]\n\n{}",
        &manifest[..start],
        &manifest[end..]
    );
    let manifest = manifest
        .lines()
        .filter(|l| !l.starts_with("adapter-kit ="))
        .collect::<Vec<_>>()
        .join("\n");
    let manifest = replace_once(
        &manifest,
        "adapter-api = { path = \"adapter-api\", version = \"1.0.0\" }",
        &format!("adapter-api = {{ path = \"adapter-api\", version = \"{version}\" }}"),
        "Cargo.toml",
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();

    let api = std::fs::read_to_string(root.join("adapter-api/Cargo.toml")).unwrap();
    let api = replace_once(
        &api,
        "version = \"1.0.0\"",
        &format!("version = \"{version}\""),
        "adapter-api/Cargo.toml",
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
    let plugin = std::fs::read_to_string(dir.join("minimal-plugin/Cargo.toml")).unwrap();
    let plugin = replace_once(
        &plugin,
        "\"../../../adapter-api\"",
        "\"../adapter-api\"",
        "minimal-plugin/Cargo.toml",
    );
    std::fs::write(dir.join("minimal-plugin/Cargo.toml"), plugin).unwrap();

    std::fs::create_dir_all(dir.join("loader/src")).unwrap();
    std::fs::write(
        dir.join("loader/Cargo.toml"),
        "[package]\nname = \"loader\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\nadapter-api = { path = \"../adapter-api\", features = [\"host\"] }\n",
    )
    .unwrap();
    std::fs::write(dir.join("loader/src/main.rs"), LOADER).unwrap();

    for patch in patches {
        apply(&dir, patch);
    }

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

/// What a loader built against another version says of one library.
fn loader_says(loader: &Path, plugin: &Path) -> String {
    let output = Command::new(loader).arg(plugin).output().unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        loader.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn same_major_and_newer_or_equal_minor_plugins_load_a_field_added_by_the_newer_minor_is_callable_and_an_older_minor_or_another_major_is_refused_in_one_line(
) {
    let (plugin_1_1, loader_1_1) = build_against("1.1.0", &add_a_field());
    let (plugin_2_0, _) = build_against("2.0.0", &[]);
    let plugin_1_0 = library("minimal_plugin");

    // Host 1.0.0: the same minor loads, and so does the newer minor with its added
    // field, which this host does not know of.
    let same_minor = host_says(&plugin_1_0);
    assert!(
        same_minor.starts_with("ok ") && same_minor.contains("api=1.0.0"),
        "{same_minor}"
    );
    let newer_minor = host_says(&plugin_1_1);
    assert!(
        newer_minor.starts_with("ok ") && newer_minor.contains("api=1.1.0"),
        "{newer_minor}"
    );
    assert_eq!(newer_minor.lines().count(), 1, "{newer_minor}");

    // Another major is refused, in one line naming the versions.
    let newer_major = host_says(&plugin_2_0);
    assert!(
        newer_major.starts_with("FAIL ")
            && newer_major.contains("incompatible plugin")
            && newer_major.contains("built against adapter-api 2.0.0")
            && newer_major.contains("this host needs 1.0.0"),
        "{newer_major}"
    );
    assert_eq!(newer_major.lines().count(), 1, "{newer_major}");

    // Host 1.1.0: its own minor loads and the added field is reached through it.
    assert_eq!(
        loader_says(&loader_1_1, &plugin_1_1),
        format!("ok 1.1.0 greeting: {GREETING}")
    );

    // An older minor is refused, in one line naming the versions and the rule. Its
    // root module lacks the added field, so the version must be checked before
    // abi_stable's layout check, which would report a field count instead.
    let older_minor = loader_says(&loader_1_1, &plugin_1_0);
    assert!(
        older_minor.starts_with("FAIL ")
            && older_minor.contains("incompatible plugin")
            && older_minor.contains("built against adapter-api 1.0.0")
            && older_minor.contains("this host needs 1.1.0")
            && older_minor.contains("same major, same or newer minor"),
        "the older minor is not refused for its version: {older_minor}"
    );
    assert_eq!(older_minor.lines().count(), 1, "{older_minor}");
}
