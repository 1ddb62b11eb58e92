//! Retention tiers on the write path, and the background sweep of idle sessions.

use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;

use crate::helpers::{TestApp, json};
use crate::support::seed;

/// Waits (bounded) until `session` has no snapshots.
async fn swept(app: &TestApp, session: &str) -> bool {
    let wait = async {
        while !app.listed(session).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .is_ok()
}

#[tokio::test]
async fn a_write_prunes_by_the_tiers_and_keeps_one_snapshot_per_day() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    // Two snapshots on each of three past days.
    let mut seeded = Vec::new();
    for (n, at) in [
        datetime!(2026-11-01 08:00 UTC),
        datetime!(2026-11-01 20:00 UTC),
        datetime!(2026-11-02 08:00 UTC),
        datetime!(2026-11-02 20:00 UTC),
        datetime!(2026-11-03 08:00 UTC),
        datetime!(2026-11-03 20:00 UTC),
    ]
    .into_iter()
    .enumerate()
    {
        seeded.push(seed(&data, "s", at, &format!("[{n}]")));
    }
    let vars = [
        ("SNAPKEEP_RETAIN_LAST", "1"),
        ("SNAPKEEP_RETAIN_DAILY", "3"),
    ];
    let app = TestApp::with_dir(temp, data, &vars).await;

    let answer = json(app.post("s", "[\"today\"]").await).await;

    // Today's write is the newest (last, daily); the dailies then cover Nov 3 and Nov 2, each
    // by its newest snapshot. Everything else goes.
    let pruned: Vec<&str> = answer["pruned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(pruned, vec![&seeded[0], &seeded[1], &seeded[2], &seeded[4]]);
    let new = answer["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.listed("s").await,
        vec![new, seeded[5].clone(), seeded[3].clone()]
    );
}

#[tokio::test]
async fn idle_sessions_are_swept_soon_after_start_and_active_ones_stay() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    // The operator's notes were put there long ago too: any change in a session's directory
    // counts as a use of it.
    std::fs::create_dir_all(data.join("quiet")).unwrap();
    std::fs::write(data.join("quiet").join("NOTES.txt"), "operator's").unwrap();
    seed(&data, "quiet", datetime!(2025-01-01 00:00 UTC), "[\"old\"]");
    let fresh = seed(&data, "active", OffsetDateTime::now_utc(), "[\"new\"]");
    let app = TestApp::with_dir(temp, data.clone(), &[("SNAPKEEP_SESSION_TTL", "90d")]).await;

    // The sweep runs right after start; wait for it (bounded), without a fixed sleep.
    assert!(swept(&app, "quiet").await, "the idle session was not swept");
    assert_eq!(app.listed("active").await, vec![fresh]);
    let notes = data.join("quiet").join("NOTES.txt");
    assert_eq!(
        std::fs::read_to_string(notes).unwrap(),
        "operator's",
        "foreign files stay"
    );
}

/// An app that keeps saving the same state only ever gets deduplicated answers, so no new
/// snapshot appears; the session is in use all the same and must not be swept.
#[tokio::test]
async fn a_session_that_keeps_saving_the_same_state_is_not_swept() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let state = "[\"unchanged\"]";
    let kept = seed(&data, "steady", datetime!(2025-01-01 00:00 UTC), state);
    seed(&data, "gone", datetime!(2025-01-01 00:00 UTC), "[\"left\"]");

    // Yesterday, say, without a TTL: the save is deduplicated.
    let app = TestApp::with_dir(temp, data.clone(), &[]).await;
    assert_eq!(
        json(app.post("steady", state).await).await["deduplicated"],
        true
    );
    let stopped = app.stop().await;

    // Today, with one: the steady session stays, the one nobody saved goes.
    let app = TestApp::restart(stopped, &[("SNAPKEEP_SESSION_TTL", "90d")]).await;
    assert!(swept(&app, "gone").await, "the idle session was not swept");
    assert_eq!(app.listed("steady").await, vec![kept]);
}
