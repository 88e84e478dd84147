//! The plugins folder and the queue's files: who may write or read them (Unix).

use e2e::fixture;

use super::World;

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_plugin_others_may_write_is_refused_with_one_line_saying_why() {
    let world = World::new();
    // What is loosened, under plugins/ (the folder itself for ""), and how.
    let cases = [
        ("the library", "libmessenger_adapter.so", 0o666),
        ("its folder", "", 0o777),
    ];
    for (what, file, mode) in cases {
        let builder = world.host();
        builder.write(builder.dir());
        chmod(&builder.dir().join("plugins").join(file), mode);
        let log = builder
            .try_start()
            .err()
            .expect("a plugin others may write was loaded");
        let line = log
            .lines()
            .find(|l| l.contains("plugin not loaded"))
            .unwrap_or_else(|| panic!("no refusal line:\n{log}"));
        assert!(
            line.contains("libmessenger_adapter.so: refused: ")
                && line.contains(what)
                && line.contains("chmod go-w"),
            "{line}"
        );
    }
}

#[test]
fn a_plugin_loaded_through_a_symbolic_link_is_logged_with_its_target() {
    let world = World::new();
    let builder = world.host();
    builder.write(builder.dir());
    let real = builder.dir().join("installed");
    std::fs::create_dir(&real).unwrap();
    e2e::owner_writable(&real);
    let link = builder.dir().join("plugins/libmessenger_adapter.so");
    std::fs::rename(&link, real.join("libmessenger_adapter.so")).unwrap();
    std::os::unix::fs::symlink(real.join("libmessenger_adapter.so"), &link).unwrap();
    let host = builder.start();
    let target = std::fs::canonicalize(real.join("libmessenger_adapter.so")).unwrap();
    assert!(
        host.log().contains(&format!(
            "plugin loaded through a symbolic link to {}",
            target.display()
        )),
        "{}",
        host.log()
    );
}

#[test]
fn queue_files_are_created_readable_by_the_host_user_only() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new();
    let builder = world.host();
    let host = builder.start();
    world.post_signed(&host, &fixture("message_text"));
    assert_eq!(world.graph_calls(&host, 1), 1);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(builder.dir()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("queue.sqlite3") {
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            files.push((name, mode));
        }
    }
    assert!(files.len() >= 3, "{files:?}");
    for (name, mode) in &files {
        assert_eq!(*mode & 0o077, 0, "{name} has mode {mode:o}");
    }
}
