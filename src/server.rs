//! Running the server: the caller binds the listener (tests bind `127.0.0.1:0`) and passes a
//! shutdown future; [`serve`] prepares the data directory and serves until that future ends,
//! then lets in-flight requests finish.

use std::future::Future;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::http::{self, AppState};

/// Prepares the store (data directory, leftover temp files) and serves `app` on `listener`
/// until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = &app.config;
    if config.enabled {
        let removed = app.store.prepare().await.with_context(|| {
            format!(
                "cannot use the data directory {}",
                config.data_dir.display()
            )
        })?;
        if removed > 0 {
            tracing::info!(removed, "removed temp files left by an earlier crash");
        }
    } else {
        tracing::warn!("backups are disabled (SNAPKEEP_ENABLED=false): session routes answer 503");
    }
    let address = listener.local_addr()?;
    tracing::info!(
        "listening on http://{address}{} with data in {}",
        config.base_path,
        config.data_dir.display()
    );
    // Without TCP_NODELAY a keep-alive client waits ~40 ms (Nagle + delayed ACK) per response.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, http::router(app))
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM (what `docker stop` sends).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
