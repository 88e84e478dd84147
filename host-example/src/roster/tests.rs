use std::{path::Path, sync::Arc};

use super::*;

/// A config file in `dir` with an empty plugins folder and no channel, plus `extra`.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    let path = dir.join("host.toml");
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"127.0.0.1:0\"\nplugins_dir = \"plugins\"\n{extra}"),
    )
    .unwrap();
    path
}

fn started(path: &Path) -> (Roster, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let roster = Roster::start(Config::load(path).unwrap(), Arc::clone(&metrics)).unwrap();
    (roster, metrics)
}

#[tokio::test]
async fn a_reload_counts_a_generation_and_names_the_tables_that_need_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let (roster, metrics) = started(&path);
    assert_eq!(roster.current().generation, 1);

    write_config(
        dir.path(),
        "workers = 3\n\n[bot]\ntyping_indicator = true\n",
    );
    let changes = roster.reload().await.unwrap();
    assert_eq!(changes.generation, 2);
    assert_eq!(changes.restart_needed, ["server", "bot"]);
    assert!(changes.added.is_empty() && changes.changed.is_empty() && changes.removed.is_empty());
    assert_eq!(roster.current().generation, 2);
    let text = metrics.render();
    assert!(text.contains("dmflow_config_generation 2"), "{text}");
    assert!(
        text.contains("dmflow_config_reloads_total{outcome=\"applied\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_config_that_does_not_load_is_refused_and_the_generation_stays() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let (roster, metrics) = started(&path);

    std::fs::write(&path, "[server\n").unwrap();
    let err = roster.reload().await.unwrap_err().to_string();
    assert!(err.contains("host.toml"), "{err}");
    write_config(
        dir.path(),
        "\n[[channels]]\nname = \"shop\"\nplugin = \"messenger\"\n",
    );
    let err = roster.reload().await.unwrap_err().to_string();
    assert!(
        err.contains("channels[0].plugin: no plugin \"messenger\""),
        "{err}"
    );
    assert_eq!(roster.current().generation, 1);
    assert!(roster.channel("shop").is_none());
    let text = metrics.render();
    assert!(
        text.contains("dmflow_config_reloads_total{outcome=\"refused\"} 2"),
        "{text}"
    );
    assert!(text.contains("dmflow_config_generation 1"), "{text}");
}

#[tokio::test]
async fn a_config_parsed_from_text_has_no_file_to_reload() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    let config = Config::parse(
        "[server]\nplugins_dir = \"plugins\"\n",
        "inline",
        dir.path(),
        |_| None,
    )
    .unwrap();
    let roster = Roster::start(config, Arc::new(Metrics::default())).unwrap();
    let err = roster.reload().await.unwrap_err().to_string();
    assert_eq!(err, "inline: not read from a file; nothing to reload");
}
