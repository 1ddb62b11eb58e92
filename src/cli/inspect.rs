//! The subcommands that work on the store itself: `list`, `show`, `verify`, `prune` and
//! `restore`. They use the same store as the server (same names, the same transactions, so
//! they are safe beside running servers), print text for people or JSON for scripts, and say
//! with their exit code whether all is well: 0 yes, 1 `verify` found problems, 2 an error.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use serde_json::{Value, json};

use super::Command;
use crate::store::name::{SessionId, SnapshotId};
use crate::store::{Opened, Report, SnapshotInfo, Store, StoreError, Which};

/// Runs one of the data-directory subcommands; `None` when `command` is not one of them.
pub async fn run_offline(
    store: &Store,
    command: &Command,
    json: bool,
) -> Option<anyhow::Result<ExitCode>> {
    let result = match command {
        Command::List { session: None } => list_sessions(store, json).await,
        Command::List {
            session: Some(session),
        } => list_snapshots(store, session, json).await,
        Command::Show { session, id } => show(store, session, id).await,
        Command::Verify => verify(store, json).await,
        Command::Prune { dry_run } => prune(store, *dry_run, json).await,
        Command::Restore { session, id, force } => restore(store, session, id, *force, json).await,
        _ => return None,
    };
    Some(result)
}

/// A snapshot id, also given as its file name (`<id>.json`), as an operator may paste it.
fn id_arg(id: &str) -> anyhow::Result<SnapshotId> {
    let bare = id.strip_suffix(".json").unwrap_or(id);
    SnapshotId::parse(bare).map_err(|err| anyhow!("invalid id {id:?}: {err}"))
}

fn session_arg(session: &str) -> anyhow::Result<SessionId> {
    SessionId::parse(session).map_err(|err| anyhow!("invalid session {session:?}: {err}"))
}

async fn list_sessions(store: &Store, json: bool) -> anyhow::Result<ExitCode> {
    let sessions = store.sessions().await?;
    if json {
        let rows: Vec<Value> = sessions
            .iter()
            .map(|s| {
                json!({
                    "session": s.session.as_str(),
                    "snapshots": s.snapshots,
                    "bytes": s.bytes,
                    "newest": s.newest.as_ref().map(|n| n.id.to_string()),
                })
            })
            .collect();
        return print_json(&Value::from(rows));
    }
    println!(
        "{:<32} {:>9} {:>12}  NEWEST",
        "SESSION", "SNAPSHOTS", "BYTES"
    );
    for s in &sessions {
        let newest = s
            .newest
            .as_ref()
            .map_or("-".into(), |n| n.id.created_rfc3339());
        println!(
            "{:<32} {:>9} {:>12}  {newest}",
            s.session.as_str(),
            s.snapshots,
            s.bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn list_snapshots(store: &Store, session: &str, json: bool) -> anyhow::Result<ExitCode> {
    let session = session_arg(session)?;
    let snapshots = store.list(&session).await?;
    if json {
        let rows: Vec<Value> = snapshots.iter().map(info_json).collect();
        return print_json(&json!({ "session": session.as_str(), "snapshots": rows }));
    }
    println!("{:<42} {:<28} {:>10}", "ID", "CREATED", "BYTES");
    for info in &snapshots {
        println!(
            "{:<42} {:<28} {:>10}",
            info.id.to_string(),
            info.id.created_rfc3339(),
            info.bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the snapshot's exact bytes, nothing added (no newline), so `> file` restores it.
async fn show(store: &Store, session: &str, id: &str) -> anyhow::Result<ExitCode> {
    let session = session_arg(session)?;
    let which = match id {
        "latest" => Which::Latest,
        id => Which::Id(id_arg(id)?),
    };
    let opened = store
        .open(&session, which, None)
        .await
        .with_context(|| format!("no snapshot {id} in session {session}"))?;
    let Opened::Snapshot(snapshot) = opened else {
        unreachable!("without an If-None-Match, a snapshot is always read");
    };
    let mut out = tokio::io::stdout();
    tokio::io::copy(&mut snapshot.body.into_reader(), &mut out).await?;
    tokio::io::AsyncWriteExt::flush(&mut out).await?;
    if !snapshot.intact {
        eprintln!("snapkeep: warning: this snapshot's content does not match its digest");
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(store: &Store, json: bool) -> anyhow::Result<ExitCode> {
    let report = store.verify().await?;
    if json {
        print_json(&report_json(&report))?;
    } else {
        for path in &report.corrupt {
            println!(
                "corrupt  {}  (content does not match the digest in its name)",
                path.display()
            );
        }
        for path in &report.temp {
            println!(
                "temp     {}  (left by a crashed or killed write; the server removes it)",
                path.display()
            );
        }
        for path in &report.missing {
            println!(
                "missing  {}  (listed in its session's head, not in the bucket)",
                path.display()
            );
        }
        for path in &report.stray {
            println!(
                "stray    {}  (not made by snapkeep; left alone)",
                path.display()
            );
        }
        let missing = match report.missing.len() {
            0 => String::new(),
            n => format!(", {n} missing"),
        };
        println!(
            "{} snapshots intact, {} corrupt, {} temp{missing}, {} stray",
            report.good,
            report.corrupt.len(),
            report.temp.len(),
            report.stray.len()
        );
    }
    Ok(match report.has_problems() {
        true => ExitCode::from(1),
        false => ExitCode::SUCCESS,
    })
}

async fn prune(store: &Store, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    let (mut kept, mut removed) = (0, 0);
    for summary in store.sessions().await? {
        for decision in store.prune(&summary.session, dry_run).await? {
            let reasons: Vec<&str> = decision.kept_by.iter().map(|r| r.as_str()).collect();
            match reasons.is_empty() {
                true => removed += 1,
                false => kept += 1,
            }
            if json {
                rows.push(json!({
                    "session": summary.session.as_str(),
                    "id": decision.id.to_string(),
                    "keep": !reasons.is_empty(),
                    "keptBy": reasons,
                }));
            } else {
                let verdict = match (reasons.is_empty(), dry_run) {
                    (false, _) => format!("keep    (kept by {})", reasons.join(", ")),
                    (true, true) => "would remove (no rule keeps it)".to_owned(),
                    (true, false) => "removed (no rule keeps it)".to_owned(),
                };
                println!("{}  {}  {verdict}", summary.session.as_str(), decision.id);
            }
        }
    }
    if json {
        return print_json(&json!({ "dryRun": dry_run, "decisions": rows }));
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    println!("{kept} kept, {removed} {verb}");
    Ok(ExitCode::SUCCESS)
}

async fn restore(
    store: &Store,
    session: &str,
    id: &str,
    force: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let session = session_arg(session)?;
    let id = id_arg(id)?;
    // The quotas count the whole store, which this process has not counted yet.
    store.recount().await?;

    let (saved, intact) = match store.restore(&session, &id, force).await {
        Err(StoreError::Damaged) => anyhow::bail!(
            "cannot restore {id} of session {session}: {}; add --force to restore it anyway",
            StoreError::Damaged
        ),
        other => other.with_context(|| format!("cannot restore {id} of session {session}"))?,
    };
    if !intact {
        eprintln!(
            "snapkeep: warning: {id}'s content does not match its digest (edited or corrupted); \
             it was restored as it is (--force)"
        );
    }
    if json {
        return print_json(&json!({
            "session": session.as_str(),
            "restored": id.to_string(),
            "id": saved.info.id.to_string(),
            "deduplicated": saved.deduplicated,
            "pruned": saved.pruned.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
    }
    match saved.deduplicated {
        true => println!("{id} is already the latest snapshot of {session}"),
        false => println!(
            "restored {id} as {} (the latest of {session})",
            saved.info.id
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn report_json(report: &Report) -> Value {
    let paths = |list: &[std::path::PathBuf]| -> Vec<String> {
        list.iter().map(|p| p.display().to_string()).collect()
    };
    json!({
        "intact": report.good,
        "corrupt": paths(&report.corrupt),
        "temp": paths(&report.temp),
        "missing": paths(&report.missing),
        "stray": paths(&report.stray),
        "ok": !report.has_problems(),
    })
}

fn info_json(info: &SnapshotInfo) -> Value {
    json!({ "id": info.id.to_string(), "createdAt": info.id.created_rfc3339(), "bytes": info.bytes })
}

fn print_json(value: &Value) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}
