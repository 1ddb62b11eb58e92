//! The `snapkeep` binary: parse the command line, read the configuration, start logging, run.
//! Exit codes: 0 on success, 1 when a health check fails, 2 on a configuration or start error
//! (or a token that cannot be minted).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use snapkeep::cli::{self, Cli, Command};
use snapkeep::config::Config;
use snapkeep::http::App;
use snapkeep::server;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, unknown) = match Config::from_env() {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("snapkeep: {err}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(&config.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
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
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (SNAPKEEP_LISTEN)", config.listen))?;
    server::serve(listener, App::new(config), server::shutdown_signal()).await
}
