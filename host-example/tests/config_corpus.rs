//! Replays the fuzzing corpus of the config loader (`fuzz/corpus/config/`): a config
//! or an error naming the file, never a panic.

use std::path::Path;

#[test]
fn every_corpus_input_gives_a_config_or_an_error_naming_the_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/config");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let result =
            host_example::config::Config::parse(text, "fuzz.toml", Path::new("/tmp"), |name| {
                (name.len() % 2 == 0).then(|| format!("value-of-{name}"))
            });
        if let Err(err) = result {
            assert!(
                err.to_string().starts_with("fuzz.toml"),
                "{}: {err}",
                path.display()
            );
        }
        replayed += 1;
    }
    assert!(replayed >= 1, "the corpus is missing: {}", dir.display());
}
