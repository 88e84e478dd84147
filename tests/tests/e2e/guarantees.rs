//! `docs/guarantees.md` names, for every promise, the tests that prove it: every test
//! it names must exist, so the table cannot point at a test that was renamed away.

use std::path::Path;

use e2e::workspace_root;

/// The test names of the table's last column: the last `::` segment of each quoted
/// path (`*` and `{a,b}` groups left out).
fn named_tests(doc: &str) -> Vec<String> {
    let mut names = Vec::new();
    for row in doc.lines().filter(|l| l.starts_with('|')) {
        let Some(tests) = row.trim_end_matches('|').rsplit('|').next() else {
            continue;
        };
        for quoted in tests.split('`').skip(1).step_by(2) {
            let last = quoted.rsplit("::").next().unwrap_or(quoted);
            let last = last.rsplit(' ').next().unwrap_or(last);
            if last.len() > 8
                && last
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                names.push(last.to_owned());
            }
        }
    }
    names
}

fn sources(dir: &Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == ".git" || name == "fuzz" {
            continue;
        }
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
}

#[test]
fn every_test_the_guarantees_table_names_exists() {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/guarantees.md")).unwrap();
    let names = named_tests(&doc);
    assert!(names.len() > 20, "the table names its tests: {names:?}");
    let mut code = String::new();
    sources(&root, &mut code);
    let missing: Vec<_> = names
        .iter()
        .filter(|name| !code.contains(&format!("fn {name}(")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/guarantees.md names tests that do not exist: {missing:?}"
    );
}
