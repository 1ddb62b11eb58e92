//! Many writers at once: every write is acknowledged, ids are unique and increasing, and
//! rotation leaves exactly RETAIN_LAST files.

use std::collections::BTreeSet;

use crate::helpers::{TestApp, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_writers_to_one_session() {
    const WRITERS: usize = 40;
    const KEEP: usize = 5;
    let app = TestApp::with(&[("SNAPKEEP_RETAIN_LAST", "5")]).await;

    let writes = (0..WRITERS).map(|n| {
        let request = app
            .client
            .post(app.session_url("shared"))
            .header("content-type", "application/json")
            .body(format!("{{\"writer\":{n}}}"));
        async move { json(request.send().await.unwrap()).await }
    });
    let answers = futures_join_all(writes).await;

    let mut ids = BTreeSet::new();
    let mut pruned = BTreeSet::new();
    for answer in &answers {
        assert_eq!(answer["deduplicated"], false, "{answer}");
        let id = answer["id"].as_str().unwrap().to_owned();
        for old in answer["pruned"].as_array().unwrap() {
            let old = old.as_str().unwrap();
            assert!(
                old < id.as_str(),
                "a write pruned a newer snapshot: {answer}"
            );
            assert!(pruned.insert(old.to_owned()), "{old} pruned twice");
        }
        assert!(ids.insert(id), "duplicate id in {answer}");
    }
    assert_eq!(ids.len(), WRITERS);

    let listed = app.listed("shared").await;
    assert_eq!(listed.len(), KEEP);
    let newest: Vec<String> = ids.iter().rev().take(KEEP).cloned().collect();
    assert_eq!(listed, newest, "the newest ids survive");
    assert_eq!(
        pruned.len(),
        WRITERS - KEEP,
        "every other id was pruned exactly once"
    );
    assert_eq!(
        std::fs::read_dir(app.session_dir("shared"))
            .unwrap()
            .count(),
        KEEP
    );
}

both!(
    concurrent_identical_writes_store_one_snapshot,
    flavor = "multi_thread",
    worker_threads = 4
);
async fn concurrent_identical_writes_store_one_snapshot() {
    let app = TestApp::spawn().await;
    let writes = (0..20).map(|_| {
        let request = app
            .client
            .post(app.session_url("same"))
            .body("{\"same\":true}");
        async move { request.send().await.unwrap().status().as_u16() }
    });
    let mut statuses = futures_join_all(writes).await;
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        19,
        "{statuses:?}"
    );
    assert_eq!(app.listed("same").await.len(), 1);
}

both!(sequential_writes_get_strictly_increasing_ids);
async fn sequential_writes_get_strictly_increasing_ids() {
    let app = TestApp::with(&[("SNAPKEEP_RETAIN_LAST", "100")]).await;
    let mut previous = String::new();
    for n in 0..50 {
        let id = app.save("seq", &format!("[{n}]")).await;
        assert!(id > previous, "{id} after {previous}");
        previous = id;
    }
}

both!(
    latest_is_never_404_while_writes_prune_under_it,
    flavor = "multi_thread",
    worker_threads = 4
);
async fn latest_is_never_404_while_writes_prune_under_it() {
    let app = TestApp::with(&[("SNAPKEEP_RETAIN_LAST", "1"), ("SNAPKEEP_FSYNC", "false")]).await;
    app.save("busy", "[0]").await;
    let url = app.url("/api/backup/busy/latest");
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (client, url) = (app.client.clone(), url.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..150 {
                    statuses.push(client.get(&url).send().await.unwrap().status().as_u16());
                }
                statuses
            })
        })
        .collect();
    for n in 1..=300 {
        assert_eq!(app.post("busy", format!("[{n}]")).await.status(), 201);
    }
    for reader in readers {
        let statuses = reader.await.unwrap();
        assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    }
}

/// Runs futures concurrently on the runtime and collects their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}
