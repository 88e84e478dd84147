//! `docs/plugin-guide.md` against what it describes: its code is the example
//! plugin's, its config loads, the files it names exist, and it covers every field
//! and error kind of the contract.

use std::path::Path;

use e2e::workspace_root;
use host_example::config::Config;

fn guide() -> String {
    std::fs::read_to_string(workspace_root().join("docs/plugin-guide.md")).unwrap()
}

/// The guide's fenced blocks: (language, text).
fn blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(language)) => open = Some((language.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a code block is not closed");
    blocks
}

/// The text of every file of the example crate with `extension`.
fn example_sources(extension: &str) -> Vec<String> {
    let root = workspace_root().join("examples/echo-adapter");
    let mut files = vec![root.join("Cargo.toml")];
    for entry in std::fs::read_dir(root.join("src")).unwrap() {
        files.push(entry.unwrap().path());
    }
    files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == extension))
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect()
}

#[test]
fn every_rust_and_cargo_snippet_of_the_guide_is_copied_from_the_example_crate() {
    let rust = example_sources("rs");
    let cargo = example_sources("toml");
    let mut checked = 0;
    for (language, text) in blocks(&guide()) {
        let sources = match language.as_str() {
            "rust" => &rust,
            "toml" if text.contains("[[channels]]") => continue,
            "toml" => &cargo,
            _ => continue,
        };
        assert!(
            sources.iter().any(|source| source.contains(&text)),
            "this {language} snippet is not in examples/echo-adapter:\n{text}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} snippets");
}

#[test]
fn the_guides_host_config_loads_and_names_the_example_plugin() {
    let configs: Vec<String> = blocks(&guide())
        .into_iter()
        .filter(|(language, text)| language == "toml" && text.contains("[[channels]]"))
        .map(|(_, text)| text)
        .collect();
    assert_eq!(configs.len(), 1);
    let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n\n{}", configs[0]);
    let config = Config::parse(&text, "guide", Path::new("."), |_| Some("x".to_owned()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.channels[0].plugin, "echo");
    let source = example_sources("rs").concat();
    assert!(source.contains("id: \"echo\""));
}

#[test]
fn every_file_the_guide_names_exists() {
    let root = workspace_root();
    let guide = guide();
    let mut named = 0;
    for token in guide.split('`').skip(1).step_by(2) {
        let top = token.split('/').next().unwrap_or("");
        let is_path = token.contains('/')
            && !token.contains([' ', '<'])
            && [
                "examples",
                "tests",
                "adapter-api",
                "adapter-kit",
                "deploy",
                "docs",
            ]
            .contains(&top);
        if is_path {
            assert!(root.join(token).exists(), "the guide names {token}");
            named += 1;
        }
    }
    for link in guide.split("](../").skip(1) {
        let target = link.split(')').next().unwrap();
        assert!(root.join(target).exists(), "the guide links to {target}");
        named += 1;
    }
    assert!(named >= 5, "{named}");
}

/// The `pub` fields of struct `name` in `source`.
fn fields(source: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("pub struct {name}"))
        .unwrap_or_else(|| panic!("no struct {name}"));
    let body = &source[start..];
    let body = &body[..body.find("\n}").unwrap()];
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split_once(':').map(|(field, _)| field.to_owned()))
        .filter(|f| !f.contains(' '))
        .collect()
}

#[test]
fn the_guide_describes_every_field_and_error_kind_of_the_contract() {
    let guide = guide();
    let api = |file: &str| {
        std::fs::read_to_string(workspace_root().join("adapter-api/src").join(file)).unwrap()
    };
    for (file, name) in [
        ("webhook.rs", "WebhookRequest"),
        ("event.rs", "InboundEvent"),
        ("outbound.rs", "OutboundMessage"),
        ("adapter.rs", "SendReceipt"),
        ("error.rs", "AdapterError"),
    ] {
        let fields = fields(&api(file), name);
        assert!(fields.len() >= 4, "{name}: {fields:?}");
        for field in fields {
            assert!(
                guide.contains(&format!("`{field}`")) || guide.contains(&format!("`{field}, ")),
                "the guide does not describe {name}::{field}"
            );
        }
    }
    let errors = api("error.rs");
    let kinds: Vec<&str> = errors
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split_once(": Self").map(|(kind, _)| kind))
        .collect();
    assert!(kinds.len() >= 11, "{kinds:?}");
    for kind in kinds {
        assert!(
            guide.contains(&format!("| `{kind}` |")),
            "the guide's error table has no row for {kind}"
        );
    }
}
