//! Replays the fuzzing corpus (`fuzz/corpus/webhook_parse/`) through the parser, so an
//! input that once broke it fails the test suite: events or a clear error, never a
//! panic, every event with an id.

#[test]
fn every_corpus_input_gives_events_or_a_clear_error() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/webhook_parse");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let body = std::fs::read(&path).unwrap();
        match messenger_adapter::webhook::parse::parse(&body) {
            Ok(events) => assert!(
                events.iter().all(|e| !e.event_id.is_empty()),
                "{}",
                path.display()
            ),
            Err(err) => assert!(
                err.to_string().starts_with("bad webhook body: "),
                "{}: {err}",
                path.display()
            ),
        }
        replayed += 1;
    }
    assert!(replayed >= 20, "the corpus is missing: {}", dir.display());
}
