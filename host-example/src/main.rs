//! Run with `host-example serve --config host.toml`; see `--help`.

use std::{ffi::OsString, io::IsTerminal, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use host_example::config::Config;

/// The example DmFlow host: serves channel plugins' webhooks and answers with a small bot.
#[derive(Parser)]
#[command(
    name = "host-example",
    version,
    about,
    after_help = "Channel operations: host-example <CHANNEL> <OPERATION>... [--config host.toml] \
                  [--file input.json | --json '{...}']\n\
                  e.g. host-example messenger profile set --file profile.json\n\
                  \x20    host-example messenger --config host.toml   (lists its operations)"
)]
struct Cli {
    /// Log as JSON lines instead of text (filter with RUST_LOG, default "info").
    #[arg(long, global = true)]
    log_json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the plugins, enable the configured channels and serve their webhooks.
    Serve {
        /// The config file.
        #[arg(long, default_value = "host.toml")]
        config: PathBuf,
    },
    /// List what each library in a folder is, or why it cannot be loaded.
    Plugins {
        /// The plugins folder.
        #[arg(long, default_value = "plugins")]
        dir: PathBuf,
    },
    /// Print a fresh random verify token for the webhook handshake.
    Keys,
    /// Try it without a Facebook account: a signed conversation through the real
    /// plugin against a sandbox Graph API on loopback, printed as a transcript.
    Demo {
        /// Where the plugin libraries are. Default: the folder of this executable
        /// (where cargo puts the Messenger plugin: `libmessenger_adapter.so`,
        /// `.dylib` on macOS, `messenger_adapter.dll` on Windows).
        #[arg(long)]
        plugins_dir: Option<PathBuf>,
    },
    /// Run only the sandbox Graph API on loopback and print every call it receives:
    /// point `graph_api_base` at it to try `serve` by hand without a Facebook account.
    Sandbox {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:9999")]
        listen: std::net::SocketAddr,
    },
    /// A channel operation: `<CHANNEL> <OPERATION>...`, see below.
    #[command(external_subcommand)]
    Channel(Vec<OsString>),
}

/// Runs one operation of a configured channel through its plugin and prints the JSON
/// result. Without an operation, lists the channel's operations.
#[derive(Parser)]
struct ChannelArgs {
    /// The operation, as words: `profile set` runs `profile.set`.
    operation: Vec<String>,
    /// The config file naming the channel.
    #[arg(long, default_value = "host.toml")]
    config: PathBuf,
    /// A JSON file with the operation's input.
    #[arg(long, conflicts_with = "json")]
    file: Option<PathBuf>,
    /// The operation's input as inline JSON.
    #[arg(long)]
    json: Option<String>,
    /// How long to wait for the result, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints a transcript; keep its log to problems unless RUST_LOG says more.
    let default_filter = if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    init_logging(cli.log_json, default_filter);
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(json: bool, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime.block_on(host_example::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins { dir } => {
            // Formatted into a fresh error: `LoadError` tells its cause in its message
            // and as its source, and the chain would print it twice.
            let set = adapter_api::load_plugins(&dir).map_err(|err| anyhow::anyhow!("{err}"))?;
            for plugin in &set.plugins {
                println!(
                    "ok   {}: id={} name={:?} version={} api={}",
                    plugin.path.display(),
                    plugin.info.id,
                    plugin.info.name.as_str(),
                    plugin.info.version,
                    plugin.info.api_version
                );
            }
            for failure in &set.failures {
                println!("FAIL {failure}");
            }
            if set.plugins.is_empty() && set.failures.is_empty() {
                println!("no plugin libraries in {}", dir.display());
            }
            Ok(if set.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Demo { plugins_dir } => {
            let plugins_dir = match plugins_dir {
                Some(dir) => dir,
                None => std::env::current_exe()
                    .context("cannot find this executable's folder")?
                    .parent()
                    .context("cannot find this executable's folder")?
                    .to_path_buf(),
            };
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            // Stdout is line-buffered: each line of the transcript shows as it happens.
            runtime.block_on(host_example::demo::run(
                &plugins_dir,
                &mut std::io::stdout(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Channel(words) => channel_operation(words),
        Command::Sandbox { listen } => {
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime.block_on(sandbox(listen))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys => {
            let mut bytes = [0u8; 24];
            getrandom::fill(&mut bytes)
                .map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
            println!("{}", hex::encode(bytes));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `host-example <WORD> ...` where WORD is no subcommand: a channel operation when
/// WORD is a channel of the config; otherwise a usage error, suggesting the
/// subcommand WORD is a typo of (`serv`: did you mean `serve`?) or listing the
/// config's channels.
fn channel_operation(words: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let channel = words
        .first()
        .and_then(|w| w.to_str())
        .context("a channel name is required")?
        .to_owned();
    let typo_of = closest_subcommand(&channel);
    let name = format!("host-example {channel}");
    let args = match ChannelArgs::try_parse_from(
        std::iter::once(name.into()).chain(words.into_iter().skip(1)),
    ) {
        Ok(args) => args,
        Err(_) if typo_of.is_some() => return Ok(unknown_subcommand(&channel, typo_of, None)),
        Err(err) => {
            // --help and usage errors print themselves.
            err.print().ok();
            return Ok(ExitCode::from(if err.use_stderr() { 2 } else { 0 }));
        }
    };
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(_) if typo_of.is_some() => return Ok(unknown_subcommand(&channel, typo_of, None)),
        Err(err) => {
            return Err(anyhow::Error::new(err).context(format!(
                "'{channel}' is not a subcommand (see --help), so it names a channel of the config"
            )))
        }
    };
    if !config.channels.iter().any(|c| c.name == channel) {
        let names: Vec<_> = config.channels.iter().map(|c| c.name.as_str()).collect();
        let channels = format!("{} ({})", args.config.display(), names.join(", "));
        return Ok(unknown_subcommand(&channel, typo_of, Some(&channels)));
    }
    let op = if args.operation.is_empty() {
        "ops".to_owned()
    } else {
        args.operation.join(".")
    };
    let input = match (&args.file, &args.json) {
        (Some(file), _) => std::fs::read_to_string(file)
            .with_context(|| format!("{}: cannot read", file.display()))?,
        (None, Some(json)) => json.clone(),
        (None, None) => "{}".to_owned(),
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let result = runtime.block_on(async {
        let adapter = host_example::roster::open_one(&config, &channel)?;
        let timeout = std::time::Duration::from_millis(args.timeout_ms);
        let result = adapter.call(&op, &input, timeout).await;
        tokio::task::spawn_blocking(move || adapter.shutdown(std::time::Duration::from_secs(5)))
            .await
            .ok();
        anyhow::Ok(result)
    })?;
    match result {
        Ok(json) => {
            let pretty = serde_json::from_str::<serde_json::Value>(&json)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or(json);
            println!("{pretty}");
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("error: {op}: {err}");
            if !err.details_json.is_empty() {
                eprintln!("details: {}", err.details_json);
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// The subcommand `word` is most likely a typo of: one at most two edits away (at
/// most one for words of four letters or fewer), or one it begins.
fn closest_subcommand(word: &str) -> Option<&'static str> {
    let word = word.to_ascii_lowercase();
    let limit = if word.chars().count() <= 4 { 1 } else { 2 };
    SUBCOMMANDS
        .iter()
        .map(|&name| (edit_distance(&word, name), name))
        .filter(|&(distance, name)| {
            distance <= limit || (word.len() >= 3 && name.starts_with(&word))
        })
        .min()
        .map(|(_, name)| name)
}

/// The subcommands, as `Command` names them.
const SUBCOMMANDS: &[&str] = &["serve", "plugins", "keys", "demo", "sandbox"];

/// Levenshtein distance between `a` and `b`, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Prints the usage error for `word`, neither a subcommand nor a channel: the
/// subcommand it looks like, or the config's channels; exit status 2.
fn unknown_subcommand(word: &str, typo_of: Option<&str>, channels: Option<&str>) -> ExitCode {
    let message = match (typo_of, channels) {
        (Some(name), _) => format!("unrecognized subcommand '{word}': did you mean '{name}'?"),
        (None, Some(channels)) => {
            format!("'{word}' is neither a subcommand nor a channel of {channels}")
        }
        (None, None) => format!("unrecognized subcommand '{word}'"),
    };
    Cli::command()
        .error(clap::error::ErrorKind::InvalidSubcommand, message)
        .print()
        .ok();
    ExitCode::from(2)
}

/// Runs the sandbox Graph API until Ctrl-C, printing each call as one JSON line.
async fn sandbox(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let sandbox = sandbox::SandboxGraph::start_on(listen)
        .await
        .with_context(|| format!("--listen: cannot listen on {listen}"))?;
    println!(
        "sandbox Graph API on {} (graph_api_base = \"{}\"); Ctrl-C stops it",
        sandbox.url, sandbox.url
    );
    let mut printed = 0;
    let stop = host_example::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
        let calls = sandbox.calls();
        for call in &calls[printed..] {
            println!("{} {} {}", call.method, call.path, call.body);
        }
        printed = calls.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_of_a_subcommand_is_recognised() {
        assert_eq!(closest_subcommand("serv"), Some("serve"));
        assert_eq!(closest_subcommand("sever"), Some("serve"));
        assert_eq!(closest_subcommand("plugin"), Some("plugins"));
        assert_eq!(closest_subcommand("Demo"), Some("demo"));
        assert_eq!(closest_subcommand("sand"), Some("sandbox"));
        assert_eq!(closest_subcommand("key"), Some("keys"));
    }

    #[test]
    fn channel_names_are_not_taken_for_typos() {
        for channel in ["messenger", "line", "echo", "telegram", "whatsapp", "slack"] {
            assert_eq!(closest_subcommand(channel), None, "{channel}");
        }
    }

    #[test]
    fn the_subcommand_list_matches_the_command_line() {
        let names: Vec<_> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .filter(|n| n != "help")
            .collect();
        assert_eq!(names, SUBCOMMANDS);
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("serve", "serve"), 0);
        assert_eq!(edit_distance("serv", "serve"), 1);
        assert_eq!(edit_distance("sevre", "serve"), 2);
        assert_eq!(edit_distance("", "keys"), 4);
    }
}
