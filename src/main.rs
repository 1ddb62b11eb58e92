//! The `snapkeep` binary: parse the command line, read the configuration, start logging, run.
//! Exit codes: 0 on success, 1 when a health check fails, 2 on a configuration or start error
//! (or a token that cannot be minted).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use snapkeep::cli::{self, Cli, Command};
use snapkeep::config::{Config, LogFormat};
use snapkeep::http::App;
use snapkeep::server;
use snapkeep::store::Store;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (mut config, unknown) = match Config::from_env() {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("snapkeep: {err}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = cli.choose_storage(&mut config) {
        eprintln!("snapkeep: {err}");
        return ExitCode::from(2);
    }
    start_logging(&config);
    for name in unknown {
        tracing::warn!("ignoring unknown setting {name}");
    }
    let runtime = tokio::runtime::Runtime::new().expect("cannot start the tokio runtime");
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match runtime.block_on(serve(config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("snapkeep: {err:#}");
                ExitCode::from(2)
            }
        },
        Command::Token { session, ttl } => match cli::token(&config.access, &session, ttl) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("snapkeep: {err:#}");
                ExitCode::from(2)
            }
        },
        Command::Healthcheck => match runtime.block_on(cli::healthcheck(config.listen)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("snapkeep: unhealthy: {err:#}");
                ExitCode::from(1)
            }
        },
        offline => {
            // The store as it is: no start-up cleanup, servers may be running on it.
            let store = Store::new(&config.storage, config.retention, config.quotas);
            match runtime.block_on(cli::run_offline(&store, &offline, cli.json)) {
                Some(Ok(code)) => code,
                Some(Err(err)) => {
                    let place = match &config.storage {
                        snapkeep::store::Storage::Dir { .. } => "data directory",
                        snapkeep::store::Storage::S3(_) => "bucket",
                    };
                    eprintln!("snapkeep: {err:#} ({place} {})", store.location());
                    ExitCode::from(2)
                }
                None => unreachable!("every other subcommand is matched above"),
            }
        }
    }
}

/// Log lines go to stderr: readable text by default, or with `SNAPKEEP_LOG_FORMAT=json` one
/// JSON object per line, its fields at the top level (as log stacks index them) and the
/// request's span (method, route, request id) under `span`.
fn start_logging(config: &Config) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(&config.log))
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // One span per request, so the list of spans would repeat `span`.
        LogFormat::Json => logs.json().flatten_event(true).with_span_list(false).init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (SNAPKEEP_LISTEN)", config.listen))?;
    server::serve(listener, App::new(config), server::shutdown_signal()).await
}
