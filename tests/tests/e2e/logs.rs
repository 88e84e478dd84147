//! The host's log as an operator reads it: why a webhook was refused, and plain text
//! when it goes to a file.

use e2e::{fake_graph, HostBuilder};

#[tokio::test(flavor = "multi_thread")]
async fn a_log_written_to_a_file_has_no_colour_codes() {
    let graph = fake_graph().await;
    // The host's stderr is a file here, and NO_COLOR is not set.
    let host = HostBuilder::new(&graph.url).start();
    let log = host.log();
    assert!(log.contains("channel enabled"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in the log:\n{log:?}");
}
