//! Lost-update protection: If-Match / If-None-Match on writes and deletes (412 with the
//! session's latest), racing conditional writers (exactly one wins), and 304 on reads.

use crate::helpers::{BASE, TestApp, assert_error, json};

fn quoted(id: &str) -> String {
    format!("\"{id}\"")
}

async fn post_if(app: &TestApp, header: &str, value: &str, body: &str) -> reqwest::Response {
    app.client
        .post(app.session_url("s"))
        .header("content-type", "application/json")
        .header(header, value)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

both!(if_match_with_the_latest_id_writes);
async fn if_match_with_the_latest_id_writes() {
    let app = TestApp::spawn().await;
    let first = app.save("s", "[1]").await;
    let response = post_if(&app, "if-match", &quoted(&first), "[2]").await;
    assert_eq!(response.status(), 201);
}

both!(if_match_with_a_stale_id_is_412_with_the_latest_and_writes_nothing);
async fn if_match_with_a_stale_id_is_412_with_the_latest_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let first = app.save("s", "[1]").await;
    let second = app.save("s", "[22]").await;
    let before = app.tree();

    let response = post_if(&app, "if-match", &quoted(&first), "[3]").await;
    let answer = assert_error(response, 412, "precondition_failed").await;
    assert_eq!(answer["latest"]["id"], second.as_str());
    assert_eq!(answer["latest"]["bytes"], 4);
    assert!(
        answer["latest"]["createdAt"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(app.tree(), before);
}

both!(if_match_takes_a_list_and_ignores_weak_tags);
async fn if_match_takes_a_list_and_ignores_weak_tags() {
    let app = TestApp::spawn().await;
    let id = app.save("s", "[1]").await;
    let list = format!(
        "\"20200101T000000.000000Z-0123456789abcdef\", {}",
        quoted(&id)
    );
    assert_eq!(post_if(&app, "if-match", &list, "[2]").await.status(), 201);

    let latest = app.listed("s").await[0].clone();
    let weak = format!("W/{}", quoted(&latest));
    assert_eq!(post_if(&app, "if-match", &weak, "[3]").await.status(), 412);
}

both!(if_match_star_needs_an_existing_snapshot);
async fn if_match_star_needs_an_existing_snapshot() {
    let app = TestApp::spawn().await;
    let response = post_if(&app, "if-match", "*", "[1]").await;
    let answer = assert_error(response, 412, "precondition_failed").await;
    assert!(answer["latest"].is_null());
    assert!(
        app.tree().is_empty(),
        "a refused write creates nothing, not even the directory"
    );

    app.save("s", "[1]").await;
    assert_eq!(post_if(&app, "if-match", "*", "[2]").await.status(), 201);
}

both!(if_none_match_star_writes_only_the_first_snapshot);
async fn if_none_match_star_writes_only_the_first_snapshot() {
    let app = TestApp::spawn().await;
    assert_eq!(
        post_if(&app, "if-none-match", "*", "[1]").await.status(),
        201
    );
    let response = post_if(&app, "if-none-match", "*", "[2]").await;
    let answer = assert_error(response, 412, "precondition_failed").await;
    assert_eq!(answer["latest"]["id"], app.listed("s").await[0].as_str());
    assert_eq!(app.listed("s").await.len(), 1);
}

both!(a_malformed_if_match_is_400);
async fn a_malformed_if_match_is_400() {
    let app = TestApp::spawn().await;
    let id = app.save("s", "[1]").await;
    for bad in [id.as_str(), "\"unterminated", "W/", "\"a\"b\""] {
        let response = post_if(&app, "if-match", bad, "[2]").await;
        assert_error(response, 400, "invalid_header").await;
    }
    assert_eq!(app.listed("s").await.len(), 1);
}

both!(
    of_racing_writers_with_the_same_if_match_exactly_one_wins,
    flavor = "multi_thread",
    worker_threads = 4
);
async fn of_racing_writers_with_the_same_if_match_exactly_one_wins() {
    let app = TestApp::spawn().await;
    let base = app.save("s", "{\"v\":0}").await;
    let writers: Vec<_> = (1..=20)
        .map(|n| {
            let request = app
                .client
                .post(app.session_url("s"))
                .header("content-type", "application/json")
                .header("if-match", quoted(&base))
                .body(format!("{{\"v\":{n}}}"));
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                (response.status().as_u16(), json(response).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for writer in writers {
        let (status, answer) = writer.await.unwrap();
        match status {
            201 => winners.push(answer["id"].as_str().unwrap().to_owned()),
            412 => losers.push(answer),
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(losers.len(), 19);
    for loser in &losers {
        assert_eq!(loser["latest"]["id"], winners[0].as_str(), "{loser}");
    }
    assert_eq!(app.listed("s").await, vec![winners[0].clone(), base]);
}

both!(delete_session_honours_if_match);
async fn delete_session_honours_if_match() {
    let app = TestApp::spawn().await;
    let old = app.save("s", "[1]").await;
    let new = app.save("s", "[2]").await;
    let stale = app
        .client
        .delete(app.session_url("s"))
        .header("if-match", quoted(&old))
        .send()
        .await
        .unwrap();
    let answer = assert_error(stale, 412, "precondition_failed").await;
    assert_eq!(answer["latest"]["id"], new.as_str());
    assert_eq!(app.listed("s").await.len(), 2);

    let current = app
        .client
        .delete(app.session_url("s"))
        .header("if-match", quoted(&new))
        .send()
        .await
        .unwrap();
    assert_eq!(current.status(), 204);
    assert!(app.listed("s").await.is_empty());
}

both!(delete_snapshot_compares_if_match_with_that_snapshots_own_etag);
async fn delete_snapshot_compares_if_match_with_that_snapshots_own_etag() {
    let app = TestApp::spawn().await;
    let old = app.save("s", "[1]").await;
    let new = app.save("s", "[2]").await;
    let delete_old_if = |tag: String| {
        app.client
            .delete(app.url(&format!("{BASE}/s/{old}")))
            .header("if-match", tag)
            .send()
    };

    let wrong = delete_old_if(quoted(&new)).await.unwrap();
    let answer = assert_error(wrong, 412, "precondition_failed").await;
    assert_eq!(answer["latest"]["id"], new.as_str());
    assert_eq!(app.listed("s").await.len(), 2);

    assert_eq!(delete_old_if(quoted(&old)).await.unwrap().status(), 204);
    assert_eq!(app.listed("s").await, vec![new]);
    // Gone now: If-Match * fails on a snapshot that does not exist.
    assert_eq!(delete_old_if("*".into()).await.unwrap().status(), 412);
}

both!(if_none_match_on_reads_answers_304_without_a_body);
async fn if_none_match_on_reads_answers_304_without_a_body() {
    let app = TestApp::spawn().await;
    let old = app.save("s", "[1]").await;
    let new = app.save("s", "[2]").await;
    let get_if = |path: String, tag: String| {
        app.client
            .get(app.url(&path))
            .header("if-none-match", tag)
            .send()
    };
    let latest = format!("{BASE}/s/latest");

    let cached = get_if(latest.clone(), quoted(&new)).await.unwrap();
    assert_eq!(cached.status(), 304);
    assert_eq!(cached.headers()["etag"], quoted(&new).as_str());
    assert_eq!(cached.headers()["x-snapshot-id"], new.as_str());
    // Nothing was read for a 304, so it states no integrity verdict either.
    assert!(cached.headers().get("x-snapshot-integrity").is_none());
    assert_eq!(cached.text().await.unwrap(), "");

    let weak = get_if(latest.clone(), format!("W/{}", quoted(&new)))
        .await
        .unwrap();
    assert_eq!(weak.status(), 304, "If-None-Match compares weakly");

    let changed = get_if(latest.clone(), quoted(&old)).await.unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(changed.text().await.unwrap(), "[2]");

    let by_id = get_if(format!("{BASE}/s/{old}"), quoted(&old))
        .await
        .unwrap();
    assert_eq!(by_id.status(), 304);
    let star = get_if(latest, "*".into()).await.unwrap();
    assert_eq!(star.status(), 304);
}

both!(snapkeeps_own_precondition_headers_say_the_same_as_the_standard_ones);
/// `Snapkeep-If-Match` / `Snapkeep-If-None-Match`: what the browser client sends across origins,
/// where `If-Match` would cost a CORS preflight per save in Chromium.
async fn snapkeeps_own_precondition_headers_say_the_same_as_the_standard_ones() {
    let app = TestApp::spawn().await;
    let created = post_if(&app, "snapkeep-if-none-match", "*", "[1]").await;
    assert_eq!(created.status(), 201);
    let first = json(created).await["id"].as_str().unwrap().to_owned();
    let again = post_if(&app, "snapkeep-if-none-match", "*", "[2]").await;
    assert_error(again, 412, "precondition_failed").await;
    let second = post_if(&app, "snapkeep-if-match", &quoted(&first), "[2]").await;
    assert_eq!(second.status(), 201);
    let stale = post_if(&app, "snapkeep-if-match", &quoted(&first), "[3]").await;
    assert_error(stale, 412, "precondition_failed").await;

    let both = app
        .client
        .post(app.session_url("s"))
        .header("content-type", "application/json")
        .header("if-match", quoted(&first))
        .header("snapkeep-if-match", quoted(&first))
        .body("[4]")
        .send()
        .await
        .unwrap();
    let refused = assert_error(both, 400, "invalid_header").await;
    assert!(
        refused["error"].as_str().unwrap().contains("not both"),
        "{refused}"
    );
    assert_eq!(app.listed("s").await.len(), 2);
}

both!(empty_list_elements_in_if_match_are_ignored);
/// RFC 9110, 5.6.1: a recipient ignores empty list elements (`"a",`, `, "a"`).
async fn empty_list_elements_in_if_match_are_ignored() {
    let app = TestApp::spawn().await;
    let first = app.save("s", "[1]").await;
    let trailing = post_if(&app, "if-match", &format!("{},", quoted(&first)), "[2]").await;
    assert_eq!(trailing.status(), 201);
    let latest = app.listed("s").await[0].clone();
    let leading = post_if(&app, "if-match", &format!(" , {}", quoted(&latest)), "[3]").await;
    assert_eq!(leading.status(), 201);
}
