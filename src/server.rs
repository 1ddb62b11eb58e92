//! Running the server: the caller binds the listener (tests bind `127.0.0.1:0`) and passes a
//! shutdown future; [`serve`] prepares the data directory and serves until that future ends.
//!
//! The accept loop is hyper's own (as in axum's `serve-with-hyper` example) rather than
//! `axum::serve`, because it needs three things that one does not offer:
//! 1. a header-read timeout, so a client that stalls (or trickles) its headers, or an idle
//!    keep-alive connection, is closed after `SNAPKEEP_HEADER_TIMEOUT`;
//! 2. a cap on connections served at once (`SNAPKEEP_MAX_CONNECTIONS`), so memory stays bounded
//!    whatever the clients do; past it, new connections wait in the kernel's backlog;
//! 3. a send timeout: a client that stops reading its answer (a large snapshot, say) for
//!    `SNAPKEEP_SEND_TIMEOUT` is disconnected, so it cannot hold a connection slot forever;
//! 4. a bounded graceful stop: on shutdown, stop accepting, let requests in flight finish for up
//!    to `SNAPKEEP_SHUTDOWN_TIMEOUT`, then return.
//!
//! (Slow bodies are bounded per request by `SNAPKEEP_BODY_TIMEOUT`, in `http/extract.rs`.)

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio_io_timeout::TimeoutStream;

use tower::ServiceExt;

use crate::auth::Keys;
use crate::http::{self, AppState, ConnectionSlot, PeerAddr};
use crate::store::StoreError;

/// Creates the data directory, starts preparing it (leftover temp files, counts) in the
/// background, and serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = &app.config;
    if config.enabled {
        let writes = !config.access.read_only;
        app.store
            .create(writes)
            .await
            .context("cannot use the data directory")?;
    } else {
        tracing::warn!("backups are disabled (SNAPKEEP_ENABLED=false): session routes answer 503");
    }
    let address = listener.local_addr()?;
    // Before the "listening" line, which tools (and the tests) wait for: by then it is out.
    if !address.ip().is_loopback() && !Keys::new(&config.access).required() {
        tracing::warn!(
            "{address} is reachable from other machines and neither SNAPKEEP_TOKEN nor \
             SNAPKEEP_SIGNING_KEY is set: anyone who can reach it can read, overwrite and delete \
             every session"
        );
    }
    tracing::info!(
        "listening on http://{address}{} with data in {}; the inspection page is http://{address}/",
        config.base_path,
        app.store.location()
    );
    spawn_housekeeping(&app);
    spawn_feed_revalidation(&app);

    let (header_timeout, shutdown_timeout) = (config.header_timeout, config.shutdown_timeout);
    let send_timeout = config.send_timeout;
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let router = http::router(app.clone());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    let mut preparation = config.enabled.then(|| spawn_preparation(&app));
    let mut unusable = None;

    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            Some(err) = failure(&mut preparation) => {
                // As unusable as if start-up had found it so: stop, and say why.
                app.store.refuse_writes();
                unusable = Some(err);
                break;
            }
            accepted = accept(&listener, &permits) => accepted,
        };
        let Some((stream, peer, permit)) = accepted else {
            continue;
        };
        let slot = ConnectionSlot::new(permit);
        let for_requests = slot.clone();
        let service = router
            .clone()
            .map_request(move |mut request: axum::extract::Request<_>| {
                request.extensions_mut().insert(PeerAddr(peer));
                request.extensions_mut().insert(for_requests.clone());
                request
            });
        let service = TowerToHyperService::new(service);
        // Without TCP_NODELAY a keep-alive client waits ~40 ms (Nagle + delayed ACK) per answer.
        let _ = stream.set_nodelay(true);
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(send_timeout));
        let connection = builder.serve_connection(TokioIo::new(Box::pin(stream)), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            slot.release();
        });
    }

    drop(listener);
    // Change feeds would stream until their clients hang up: they end now.
    app.stopping.cancel();
    if let Some(err) = &unusable {
        tracing::error!(error = %err, "cannot prepare the data directory; stopping");
    }
    tracing::info!("shutting down: finishing requests in flight");
    let stopped = graceful.shutdown();
    tokio::pin!(stopped);
    let drained = tokio::select! {
        _ = &mut stopped => true,
        _ = tokio::time::sleep(shutdown_timeout) => false,
    };
    if drained {
        tracing::info!("stopped");
    } else {
        // Out of patience with slow clients, but not with the disk: writes already in the
        // store finish, and get a moment to send their answers; nothing new starts writing.
        app.store.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut stopped).await;
        tracing::warn!(?shutdown_timeout, "stopped with requests still in flight");
    }
    match unusable {
        Some(err) => Err(anyhow::Error::new(err).context(format!(
            "cannot use the data directory {}",
            app.store.location()
        ))),
        None => Ok(()),
    }
}

/// Completes with start-up preparation's error, if it fails; never completes otherwise.
async fn failure(preparation: &mut Option<oneshot::Receiver<StoreError>>) -> Option<StoreError> {
    let Some(receiver) = preparation else {
        return std::future::pending().await;
    };
    let outcome = receiver.await;
    *preparation = None;
    outcome.ok()
}

/// Waits for a free connection slot, then for a connection. An accept error (such as running
/// out of file descriptors) is logged and retried after a short pause, not fatal.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> Option<(
    tokio::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    let permit = permits.clone().acquire_owned().await.expect("never closed");
    match listener.accept().await {
        Ok((stream, peer)) => Some((stream, peer, permit)),
        Err(err) => {
            tracing::warn!(error = %err, "accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// Removes a crash's temp files and counts what the store holds in the background, holding
/// writes and deletes back until it is done: reads are served from the first moment, however
/// many snapshots there are (with 100,000, the walk takes a few hundred milliseconds). The
/// receiver gets the error if it fails, and the server stops; an object store that does not
/// answer is tried again every second instead (its writes answer 503 meanwhile).
fn spawn_preparation(app: &AppState) -> oneshot::Receiver<StoreError> {
    app.store.hold_writes();
    let (failed, receiver) = oneshot::channel();
    let app = app.clone();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let prepared = loop {
            match app.store.prepare().await {
                Err(StoreError::Unavailable(why)) => {
                    tracing::warn!(error = %why, "the object store is unavailable; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => break other,
            }
        };
        match prepared {
            Ok(removed) => {
                if removed > 0 {
                    tracing::info!(removed, "removed temp files left by an earlier crash");
                }
                let counts = app.store.counts();
                tracing::info!(
                    sessions = counts.sessions,
                    bytes = counts.bytes,
                    millis = started.elapsed().as_millis() as u64,
                    "{} ready: writes are accepted",
                    app.store.location()
                );
            }
            Err(err) => {
                let _ = failed.send(err);
            }
        }
    });
    receiver
}

/// Right after start and then once a minute: remove sessions idle for longer than
/// `SNAPKEEP_SESSION_TTL`, forget rate-limit buckets that are full again, and recount what the
/// store holds (noticing hand edits, and other instances' writes). A bucket is also swept of
/// what killed writes left, at start and then once an hour. The task ends with the app.
fn spawn_housekeeping(app: &AppState) {
    let app = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        let mut first = true;
        for minute in 0u64.. {
            tick.tick().await; // the first tick is immediate
            let Some(app) = app.upgrade() else { return };
            if let Some(limiters) = &app.limiters {
                limiters.forget_idle();
            }
            if !app.config.enabled {
                continue;
            }
            // A read-only server deletes nothing, idle sessions included.
            if let Some(ttl) = app.config.session_ttl
                && !app.config.access.read_only
            {
                expire_idle_sessions(&app, ttl).await;
            }
            // A read-only server deletes nothing, a bucket's leftovers included.
            if !app.config.access.read_only && minute % 60 == 0 {
                sweep_leftovers(&app).await;
            }
            // Start-up has just counted; from the second tick on, notice hand edits and other
            // instances' writes.
            if !std::mem::take(&mut first)
                && let Err(err) = app.store.recount().await
            {
                tracing::warn!(error = %err, "could not count what the store holds");
            }
        }
    });
}

/// About once a second, the sessions someone follows are read again, so their feeds hear of
/// changes this process did not make (another instance, the CLI, an edit by hand). The task
/// ends with the app.
fn spawn_feed_revalidation(app: &AppState) {
    let app = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(app) = app.upgrade() else { return };
            if app.config.enabled {
                app.store.revalidate_feeds().await;
            }
        }
    });
}

async fn sweep_leftovers(app: &AppState) {
    match app.store.sweep().await {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "swept objects that killed writes left"),
        Err(err) => tracing::warn!(error = %err, "could not sweep the bucket"),
    }
}

async fn expire_idle_sessions(app: &AppState, ttl: Duration) {
    match app.store.expire(ttl, time::OffsetDateTime::now_utc()).await {
        Ok(removed) => {
            for session in removed {
                tracing::info!(%session, ?ttl, "removed a session idle for longer than SNAPKEEP_SESSION_TTL");
            }
        }
        Err(err) => tracing::warn!(error = %err, "could not sweep idle sessions"),
    }
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
}
