//! Many writers, one truth: real `snapkeep` processes sharing one data directory, then one
//! bucket (moto's S3 server), racing each other and the CLI. Whatever the interleaving, of two
//! writes that expect the same latest snapshot exactly one wins, and no acknowledged snapshot
//! that retention keeps is ever lost.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use support::{BASE, Server, listed_ids, snapkeep};

/// Rounds of the conditional race.
const ROUNDS: usize = 100;

/// Where the two servers keep their snapshots.
enum Shared {
    Dir(tempfile::TempDir),
    /// A prefix in moto's bucket, and a directory for what a process needs locally.
    Bucket(String, tempfile::TempDir),
}

impl Shared {
    fn dir() -> Self {
        Shared::Dir(tempfile::tempdir().unwrap())
    }

    /// A new prefix in moto's bucket; `None` (the test skipped, visibly) without moto.
    fn bucket() -> Option<Self> {
        support::s3::moto()?;
        let prefix = uuid::Uuid::new_v4().to_string();
        Some(Shared::Bucket(prefix, tempfile::tempdir().unwrap()))
    }

    /// `SNAPKEEP_*` and `AWS_*` settings that point a process at it.
    fn vars(&self) -> Vec<(String, String)> {
        match self {
            Shared::Dir(dir) => vec![("SNAPKEEP_DATA_DIR".into(), path(dir.path()))],
            Shared::Bucket(prefix, _) => support::s3::moto().unwrap().vars(prefix),
        }
    }

    /// A server process on it, ready for writes.
    fn server(&self, extra: &[(&str, &str)]) -> Server {
        let dir = match self {
            Shared::Dir(dir) | Shared::Bucket(_, dir) => dir.path(),
        };
        let mut vars = self.vars();
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        vars.push(("SNAPKEEP_FSYNC".into(), "false".into()));
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let server = Server::start(dir, &vars);
        server.wait_prepared();
        server
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// POSTs `body` to `url` with `If-Match: "<expected>"`; the status and the answer.
async fn post_if_match(
    client: &reqwest::Client,
    url: String,
    expected: &str,
    body: String,
) -> (u16, Value) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("if-match", format!("\"{expected}\""))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Two processes, one session; each round both write, expecting the same latest: exactly one
/// `201` and one `412`, and the history is exactly the first snapshot and the winners.
async fn conditional_writes_race(shared: Shared) {
    let keep = (ROUNDS + 1).to_string();
    let extra = [("SNAPKEEP_RETAIN_LAST", keep.as_str())];
    let (a, b) = (shared.server(&extra), shared.server(&extra));
    let client = reqwest::Client::new();
    let first = client
        .post(a.url(&format!("{BASE}/race")))
        .header("content-type", "application/json")
        .body("{\"round\":0}")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let mut latest = first.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut history = vec![latest.clone()];
    for round in 1..=ROUNDS {
        let (to_a, to_b) = tokio::join!(
            post_if_match(
                &client,
                a.url(&format!("{BASE}/race")),
                &latest,
                format!("{{\"a\":{round}}}")
            ),
            post_if_match(
                &client,
                b.url(&format!("{BASE}/race")),
                &latest,
                format!("{{\"b\":{round}}}")
            ),
        );
        let mut statuses = [to_a.0, to_b.0];
        statuses.sort();
        assert_eq!(statuses, [201, 412], "round {round}: {to_a:?} {to_b:?}");
        let (winner, loser) = if to_a.0 == 201 {
            (to_a, to_b)
        } else {
            (to_b, to_a)
        };
        latest = winner.1["id"].as_str().unwrap().to_owned();
        assert_eq!(loser.1["code"], "precondition_failed");
        assert_eq!(loser.1["latest"]["id"], latest.as_str(), "round {round}");
        history.push(latest.clone());
    }
    history.reverse();
    for server in [&a, &b] {
        let listed = listed_ids(&client, &server.url(&format!("{BASE}/race"))).await;
        assert_eq!(listed, history, "the history holds exactly the winners");
    }
}

/// Two processes writing the same session as fast as they can, without conditions: every
/// acknowledged snapshot that retention keeps is there, the newest among them.
async fn unconditional_writes_lose_nothing(shared: Shared) {
    const KEEP: usize = 5;
    const PER_WRITER: usize = 25;
    let extra = [("SNAPKEEP_RETAIN_LAST", "5")];
    let servers = [shared.server(&extra), shared.server(&extra)];
    let client = reqwest::Client::new();
    let mut writers = Vec::new();
    for (n, server) in servers.iter().enumerate() {
        for w in 0..3 {
            let (client, url) = (client.clone(), server.url(&format!("{BASE}/busy")));
            writers.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..PER_WRITER {
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(format!("{{\"server\":{n},\"writer\":{w},\"i\":{i}}}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 201);
                    let answer: Value = response.json().await.unwrap();
                    acknowledged.push(answer["id"].as_str().unwrap().to_owned());
                }
                acknowledged
            }));
        }
    }
    let mut acknowledged = BTreeSet::new();
    for writer in writers {
        for id in writer.await.unwrap() {
            assert!(acknowledged.insert(id), "an id was given twice");
        }
    }
    assert_eq!(acknowledged.len(), 6 * PER_WRITER);
    let newest: Vec<String> = acknowledged.iter().rev().take(KEEP).cloned().collect();
    for server in &servers {
        let listed = listed_ids(&client, &server.url(&format!("{BASE}/busy"))).await;
        assert_eq!(listed, newest, "the newest acknowledged snapshots are kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_race_on_one_directory() {
    conditional_writes_race(Shared::dir()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_race_on_one_bucket() {
    let Some(bucket) = Shared::bucket() else {
        return;
    };
    conditional_writes_race(bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconditional_writes_from_two_processes_on_one_directory_lose_nothing() {
    unconditional_writes_lose_nothing(Shared::dir()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconditional_writes_from_two_processes_on_one_bucket_lose_nothing() {
    let Some(bucket) = Shared::bucket() else {
        return;
    };
    unconditional_writes_lose_nothing(bucket).await;
}

/// The CLI's `restore` and `prune` run while a server writes to the same session: every
/// snapshot the server acknowledged, and every one a restore made, is kept as retention says.
async fn the_cli_racing_a_server_loses_nothing(shared: Shared) {
    const KEEP: usize = 4;
    let extra = [("SNAPKEEP_RETAIN_LAST", "4")];
    let server = shared.server(&extra);
    let client = reqwest::Client::new();
    let url = server.url(&format!("{BASE}/s"));
    let first = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"first\":true}")
        .send()
        .await
        .unwrap();
    let first: Value = first.json().await.unwrap();
    let first = first["id"].as_str().unwrap().to_owned();

    let writer = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut acknowledged = Vec::new();
            for i in 0..60 {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(format!("{{\"i\":{i}}}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
                let answer: Value = response.json().await.unwrap();
                acknowledged.push(answer["id"].as_str().unwrap().to_owned());
            }
            acknowledged
        }
    });
    let mut cli_vars = shared.vars();
    cli_vars.push(("SNAPKEEP_RETAIN_LAST".into(), "4".into()));
    cli_vars.push(("SNAPKEEP_FSYNC".into(), "false".into()));
    let mut restored = Vec::new();
    while !writer.is_finished() {
        // `first` is pruned soon; restoring it then is a clean "no such snapshot".
        let restore = tokio::task::spawn_blocking({
            let (vars, first) = (cli_vars.clone(), first.clone());
            move || {
                snapkeep(&[])
                    .envs(vars)
                    .args(["--json", "restore", "s", &first])
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        if restore.status.success() {
            let answer: Value = serde_json::from_slice(&restore.stdout).unwrap();
            restored.push(answer["id"].as_str().unwrap().to_owned());
        } else {
            let said = String::from_utf8_lossy(&restore.stderr);
            assert!(said.contains("no such snapshot"), "{said}");
        }
        let prune = tokio::task::spawn_blocking({
            let vars = cli_vars.clone();
            move || snapkeep(&[]).envs(vars).arg("prune").output().unwrap()
        })
        .await
        .unwrap();
        let said = String::from_utf8_lossy(&prune.stderr);
        assert!(prune.status.success(), "{said}");
    }
    let acknowledged = writer.await.unwrap();
    let every: BTreeSet<String> = acknowledged.into_iter().chain(restored).collect();
    let newest: Vec<String> = every.iter().rev().take(KEEP).cloned().collect();
    assert_eq!(listed_ids(&client, &url).await, newest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_racing_a_server_on_one_directory_loses_nothing() {
    the_cli_racing_a_server_loses_nothing(Shared::dir()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_racing_a_server_on_one_bucket_loses_nothing() {
    let Some(bucket) = Shared::bucket() else {
        return;
    };
    the_cli_racing_a_server_loses_nothing(bucket).await;
}

/// A server killed (`kill -9`) while writes are in flight: every write it acknowledged is
/// there for the next server, and what the killed writes left is no snapshot.
async fn a_server_killed_mid_write_loses_no_acknowledged_snapshot(shared: Shared) {
    let extra = [("SNAPKEEP_RETAIN_LAST", "1000")];
    let server = shared.server(&extra);
    let client = reqwest::Client::new();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, url) = (client.clone(), server.url(&format!("{BASE}/k")));
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0.. {
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(format!("{{\"writer\":{w},\"i\":{i}}}"))
                    .send()
                    .await;
                let Ok(response) = sent else {
                    return acknowledged; // killed
                };
                let Ok(answer) = response.json::<Value>().await else {
                    return acknowledged;
                };
                acknowledged.push(answer["id"].as_str().unwrap().to_owned());
            }
            unreachable!()
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    server.signal(nix::sys::signal::Signal::SIGKILL);
    let mut acknowledged = BTreeSet::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    assert!(acknowledged.len() > 4, "the writes had started");

    let next = shared.server(&extra);
    let listed: BTreeSet<String> = listed_ids(&client, &next.url(&format!("{BASE}/k")))
        .await
        .into_iter()
        .collect();
    let lost: Vec<&String> = acknowledged.difference(&listed).collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    let verify = snapkeep(&[])
        .envs(shared.vars())
        .arg("verify")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_write_on_a_directory_loses_no_acknowledged_snapshot() {
    a_server_killed_mid_write_loses_no_acknowledged_snapshot(Shared::dir()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_write_on_a_bucket_loses_no_acknowledged_snapshot() {
    let Some(bucket) = Shared::bucket() else {
        return;
    };
    a_server_killed_mid_write_loses_no_acknowledged_snapshot(bucket).await;
}
