//! What the loader accepts and refuses: one line per refused file, the rest load.

use e2e::{install, library, messenger_plugin, owner_writable, plugins_listing};

#[test]
fn every_refusal_is_one_line_naming_the_file_and_the_others_load() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "messenger_adapter",
        "line_adapter",
        "minimal_plugin",
        "faulty_plugin",
        "not_a_plugin",
    ] {
        let file = library(name);
        install(&file, &dir.path().join(file.file_name().unwrap()));
    }
    let whole = std::fs::read(messenger_plugin()).unwrap();
    let truncated = dir.path().join("libtruncated.so");
    std::fs::write(&truncated, &whole[..whole.len() / 3]).unwrap();
    let notes = dir.path().join("libnotes.so");
    std::fs::write(&notes, "just some text\n").unwrap();
    owner_writable(&truncated);
    owner_writable(&notes);

    let (code, stdout) = plugins_listing(dir.path());
    assert_eq!(code, Some(1), "{stdout}");
    let lines: Vec<_> = stdout.lines().collect();
    let ok: Vec<_> = lines.iter().filter(|l| l.starts_with("ok ")).collect();
    let failed: Vec<_> = lines.iter().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    for id in ["id=messenger", "id=line", "id=minimal", "id=faulty"] {
        assert!(
            ok.iter().any(|l| l.contains(id)),
            "{id} did not load:\n{stdout}"
        );
    }
    let reason = |file: &str| {
        failed
            .iter()
            .find(|l| l.contains(file))
            .map(|l| l.to_string())
            .unwrap_or_default()
    };
    assert!(
        reason("libnot_a_plugin.so").contains("not a DmFlow adapter plugin"),
        "{stdout}"
    );
    assert!(
        reason("libtruncated.so").contains("not a loadable library"),
        "{stdout}"
    );
    assert!(
        reason("libnotes.so").contains("not a loadable library"),
        "{stdout}"
    );
}
