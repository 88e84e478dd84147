//! Run with `host-example serve --config host.toml`; see `--help`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use host_example::config::Config;

/// The example DmFlow host: serves channel plugins' webhooks and answers with a small bot.
#[derive(Parser)]
#[command(name = "host-example", version, about)]
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
        /// (where cargo puts `libmessenger_adapter.so`).
        #[arg(long)]
        plugins_dir: Option<PathBuf>,
    },
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
            let set = adapter_api::load_plugins(&dir)?;
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
            let transcript = runtime.block_on(host_example::demo::run(&plugins_dir))?;
            print!("{transcript}");
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
