//! Who may call the API: the operator token (`SNAPKEEP_TOKEN`), per-session tokens signed with
//! `SNAPKEEP_SIGNING_KEY`, read-only mode, the status route's `auth` and `readOnly`, and
//! `X-Content-Type-Options: nosniff` on every answer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use snapkeep::auth::mint;
use snapkeep::store::name::SessionId;

use crate::helpers::{BASE, TestApp, assert_error, json};

const OPERATOR: &str = "operator-token-0123456789";
const KEY: &str = "signing-key-0123456789abcdef";
const OTHER_KEY: &str = "another-signing-key-0123456789";
const WRONG: &str = "wrong-token-0123456789abc";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A session token for `session`, signed with `key`, valid until `expires`.
fn minted(key: &str, session: &str, expires: i64) -> String {
    mint(key.as_bytes(), &SessionId::parse(session).unwrap(), expires)
}

/// A session token for `session` from this server's signing key, valid for an hour.
fn session_token(session: &str) -> String {
    minted(KEY, session, now() + 3600)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `token` with its character at `index` replaced by another one.
fn changed_at(token: &str, index: usize) -> String {
    let mut bytes = token.as_bytes().to_vec();
    bytes[index] = if bytes[index] == b'0' { b'1' } else { b'0' };
    String::from_utf8(bytes).unwrap()
}

/// Which credentials a server is started with.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Open,
    TokenOnly,
    KeyOnly,
    Both,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::Open, Mode::TokenOnly, Mode::KeyOnly, Mode::Both];

    fn vars(self) -> Vec<(&'static str, &'static str)> {
        let mut vars = vec![("SNAPKEEP_FSYNC", "false")];
        if matches!(self, Mode::TokenOnly | Mode::Both) {
            vars.push(("SNAPKEEP_TOKEN", OPERATOR));
        }
        if matches!(self, Mode::KeyOnly | Mode::Both) {
            vars.push(("SNAPKEEP_SIGNING_KEY", KEY));
        }
        vars
    }

    async fn spawn(self) -> TestApp {
        TestApp::with(&self.vars()).await
    }

    /// A credential that may write to `session` in this mode.
    fn writer(self, session: &str) -> Option<String> {
        match self {
            Mode::Open => None,
            Mode::TokenOnly | Mode::Both => Some(bearer(OPERATOR)),
            Mode::KeyOnly => Some(bearer(&session_token(session))),
        }
    }
}

/// What a request carries in `Authorization`.
#[derive(Debug, Clone, Copy)]
enum Credential {
    NoToken,
    WrongToken,
    Operator,
    ThisSession,
    OtherSession,
    Expired,
    Tampered,
    OtherKey,
}

impl Credential {
    /// The `Authorization` value for a request to `session`.
    fn header(self, session: &str) -> Option<String> {
        let token = match self {
            Credential::NoToken => return None,
            Credential::WrongToken => WRONG.to_owned(),
            Credential::Operator => OPERATOR.to_owned(),
            Credential::ThisSession => session_token(session),
            Credential::OtherSession => session_token("someone-else"),
            Credential::Expired => minted(KEY, session, now() - 1),
            Credential::Tampered => {
                let token = session_token(session);
                changed_at(&token, token.len() - 1)
            }
            Credential::OtherKey => minted(OTHER_KEY, session, now() + 3600),
        };
        Some(bearer(&token))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allowed,
    Unauthorized,
    Forbidden,
}

use Credential::*;
use Outcome::*;

/// The routes each credential is tried on.
#[derive(Debug, Clone, Copy)]
enum Route {
    List,
    Post,
    Patch,
    Latest,
    Snapshot,
    DeleteSnapshot,
    DeleteSession,
}

impl Route {
    const ALL: [Route; 7] = [
        Route::List,
        Route::Post,
        Route::Patch,
        Route::Latest,
        Route::Snapshot,
        Route::DeleteSnapshot,
        Route::DeleteSession,
    ];

    fn success(self) -> u16 {
        match self {
            Route::List | Route::Latest | Route::Snapshot => 200,
            Route::Post | Route::Patch => 201,
            Route::DeleteSnapshot | Route::DeleteSession => 204,
        }
    }

    /// The request for this route on `session`, whose only snapshot is `id`.
    fn request(self, app: &TestApp, session: &str, id: &str) -> reqwest::RequestBuilder {
        let c = &app.client;
        let one = app.url(&format!("{BASE}/{session}/{id}"));
        match self {
            Route::List => c.get(app.session_url(session)),
            Route::Post => c
                .post(app.session_url(session))
                .header(CONTENT_TYPE, "application/json")
                .body(r#"{"n":2}"#),
            Route::Patch => c
                .patch(app.session_url(session))
                .header(CONTENT_TYPE, "application/merge-patch+json")
                .body(r#"{"m":3}"#),
            Route::Latest => c.get(app.url(&format!("{BASE}/{session}/latest"))),
            Route::Snapshot => c.get(one),
            Route::DeleteSnapshot => c.delete(one),
            Route::DeleteSession => c.delete(app.session_url(session)),
        }
    }
}

/// Saves one snapshot in `session` with a credential that may, and returns its id.
async fn seed(app: &TestApp, mode: Mode, session: &str) -> String {
    let mut request = app
        .client
        .post(app.session_url(session))
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"n":1}"#);
    if let Some(writer) = mode.writer(session) {
        request = request.header(AUTHORIZATION, writer);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 201, "seeding {session} in {mode:?}");
    json(response).await["id"].as_str().unwrap().to_owned()
}

/// Tries every credential of `table` on every route, each on a session of its own holding one
/// snapshot: allowed requests get the route's success status; refused ones get 401 (with
/// `WWW-Authenticate`) or 403, and leave the data directory exactly as it was.
async fn check_matrix(mode: Mode, table: [(Credential, Outcome); 8]) {
    let app = mode.spawn().await;
    for (c, (credential, outcome)) in table.into_iter().enumerate() {
        for (r, route) in Route::ALL.into_iter().enumerate() {
            let session = format!("s-{c}-{r}");
            let id = seed(&app, mode, &session).await;
            let before = app.tree();
            let mut request = route.request(&app, &session, &id);
            if let Some(value) = credential.header(&session) {
                request = request.header(AUTHORIZATION, value);
            }
            let response = request.send().await.unwrap();
            let what = format!("{mode:?}, {credential:?}, {route:?}");
            let status = response.status().as_u16();
            let (expected, code) = match outcome {
                Allowed => {
                    assert_eq!(status, route.success(), "{what}");
                    continue;
                }
                Unauthorized => (401, "unauthorized"),
                Forbidden => (403, "forbidden"),
            };
            assert_eq!(status, expected, "{what}");
            if expected == 401 {
                assert_eq!(
                    response.headers()[WWW_AUTHENTICATE],
                    r#"Bearer realm="snapkeep""#,
                    "{what}"
                );
            }
            let body = json(response).await;
            assert_eq!(body["code"], code, "{what}: {body}");
            assert_eq!(app.tree(), before, "{what} changed the data directory");
        }
    }
}

both!(with_no_credentials_configured_every_request_reaches_every_route);
async fn with_no_credentials_configured_every_request_reaches_every_route() {
    check_matrix(
        Mode::Open,
        [
            (NoToken, Allowed),
            (WrongToken, Allowed),
            (Operator, Allowed),
            (ThisSession, Allowed),
            (OtherSession, Allowed),
            (Expired, Allowed),
            (Tampered, Allowed),
            (OtherKey, Allowed),
        ],
    )
    .await;
}

both!(with_only_an_operator_token_nothing_but_that_token_gets_in);
async fn with_only_an_operator_token_nothing_but_that_token_gets_in() {
    check_matrix(
        Mode::TokenOnly,
        [
            (NoToken, Unauthorized),
            (WrongToken, Unauthorized),
            (Operator, Allowed),
            // Without a signing key, a session token is just a wrong token.
            (ThisSession, Unauthorized),
            (OtherSession, Unauthorized),
            (Expired, Unauthorized),
            (Tampered, Unauthorized),
            (OtherKey, Unauthorized),
        ],
    )
    .await;
}

both!(with_only_a_signing_key_a_session_token_reaches_its_own_session_and_nothing_else);
async fn with_only_a_signing_key_a_session_token_reaches_its_own_session_and_nothing_else() {
    check_matrix(
        Mode::KeyOnly,
        [
            (NoToken, Unauthorized),
            (WrongToken, Unauthorized),
            // No operator token is configured, so that string is just a wrong token.
            (Operator, Unauthorized),
            (ThisSession, Allowed),
            (OtherSession, Forbidden),
            (Expired, Unauthorized),
            (Tampered, Unauthorized),
            (OtherKey, Unauthorized),
        ],
    )
    .await;
}

both!(with_both_the_operator_token_reaches_everything_and_a_session_token_its_session);
async fn with_both_the_operator_token_reaches_everything_and_a_session_token_its_session() {
    check_matrix(
        Mode::Both,
        [
            (NoToken, Unauthorized),
            (WrongToken, Unauthorized),
            (Operator, Allowed),
            (ThisSession, Allowed),
            (OtherSession, Forbidden),
            (Expired, Unauthorized),
            (Tampered, Unauthorized),
            (OtherKey, Unauthorized),
        ],
    )
    .await;
}

both!(health_readiness_and_status_stay_open_in_every_mode);
async fn health_readiness_and_status_stay_open_in_every_mode() {
    for mode in Mode::ALL {
        let app = mode.spawn().await;
        for path in ["/healthz", "/readyz", BASE] {
            for credential in [None, Some(bearer(WRONG)), Some(bearer(OPERATOR))] {
                let mut request = app.client.get(app.url(path));
                if let Some(value) = &credential {
                    request = request.header(AUTHORIZATION, value);
                }
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200, "{mode:?} {path} {credential:?}");
            }
        }
    }
}

both!(a_401_asks_for_a_bearer_token_in_the_snapkeep_realm);
async fn a_401_asks_for_a_bearer_token_in_the_snapkeep_realm() {
    let app = Mode::Both.spawn().await;
    let expired = bearer(&minted(KEY, "s", now() - 10));
    for credential in [None, Some(bearer(WRONG)), Some(expired)] {
        let mut request = app.client.get(app.session_url("s"));
        if let Some(value) = &credential {
            request = request.header(AUTHORIZATION, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            r#"Bearer realm="snapkeep""#,
            "{credential:?}"
        );
        assert_error(response, 401, "unauthorized").await;
    }
}

both!(the_token_is_case_sensitive_but_the_bearer_scheme_is_not);
async fn the_token_is_case_sensitive_but_the_bearer_scheme_is_not() {
    let app = Mode::TokenOnly.spawn().await;
    let get = |value: String| {
        app.client
            .get(app.session_url("s"))
            .header(AUTHORIZATION, value)
            .send()
    };
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = get(format!("{scheme} {OPERATOR}")).await.unwrap();
        assert_eq!(response.status(), 200, "scheme {scheme}");
    }
    for token in [OPERATOR.to_uppercase(), {
        let mut first_upper = OPERATOR.to_owned();
        first_upper.replace_range(0..1, "O");
        first_upper
    }] {
        let response = get(bearer(&token)).await.unwrap();
        assert_error(response, 401, "unauthorized").await;
    }
}

both!(only_the_whole_token_sent_as_a_bearer_token_gets_in);
async fn only_the_whole_token_sent_as_a_bearer_token_gets_in() {
    let app = Mode::TokenOnly.spawn().await;
    let refused = [
        OPERATOR.to_owned(),
        format!("Basic {OPERATOR}"),
        format!("Token {OPERATOR}"),
        bearer(&OPERATOR[..OPERATOR.len() - 1]),
        bearer(&format!("{OPERATOR}x")),
        bearer(&format!("x{OPERATOR}")),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        String::new(),
    ];
    for value in refused {
        let response = app
            .client
            .post(app.session_url("s"))
            .header(AUTHORIZATION, &value)
            .header(CONTENT_TYPE, "application/json")
            .body("[1]")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{value:?}");
    }
    assert!(app.tree().is_empty(), "a refused write created something");
}

#[tokio::test]
async fn changing_any_character_of_a_session_token_makes_it_401() {
    let app = Mode::KeyOnly.spawn().await;
    let id = seed(&app, Mode::KeyOnly, "s").await;
    let token = session_token("s");
    for index in 0..token.len() {
        let tampered = changed_at(&token, index);
        let response = app
            .client
            .get(app.url(&format!("{BASE}/s/{id}")))
            .header(AUTHORIZATION, bearer(&tampered))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "changed at {index}: {tampered}");
    }
    // Hex in capitals is another string than the one the server signs.
    let (payload, signature) = token.rsplit_once(':').unwrap();
    let shouted = format!("{payload}:{}", signature.to_uppercase());
    let response = app
        .client
        .get(app.session_url("s"))
        .header(AUTHORIZATION, bearer(&shouted))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

both!(a_session_token_works_until_it_expires);
async fn a_session_token_works_until_it_expires() {
    let app = Mode::KeyOnly.spawn().await;
    let token = bearer(&minted(KEY, "s", now() + 2));
    let list = || {
        app.client
            .get(app.session_url("s"))
            .header(AUTHORIZATION, &token)
            .send()
    };
    assert_eq!(list().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_error(list().await.unwrap(), 401, "unauthorized").await;
}

both!(a_session_token_does_not_reach_a_session_that_only_looks_alike);
async fn a_session_token_does_not_reach_a_session_that_only_looks_alike() {
    let app = Mode::KeyOnly.spawn().await;
    let token = bearer(&session_token("s"));
    for other in ["S", "s2", "s.", "s-", "ss"] {
        let response = app
            .client
            .post(app.session_url(other))
            .header(AUTHORIZATION, &token)
            .header(CONTENT_TYPE, "application/json")
            .body("[1]")
            .send()
            .await
            .unwrap();
        assert_error(response, 403, "forbidden").await;
    }
    assert!(app.tree().is_empty(), "a refused write created something");
}

both!(paths_that_only_look_different_do_not_get_around_the_token);
async fn paths_that_only_look_different_do_not_get_around_the_token() {
    let app = Mode::TokenOnly.spawn().await;
    for path in [
        "//api/backup/s",
        "/api/backup//s",
        "/api//backup/s",
        "/api/%62ackup/s",
        "/api/backup/%73",
        "/api/backup/./s",
        "/api/backup/x/../s",
        "/API/backup/s",
        "/api/backup/s/",
        "/api/backup/",
    ] {
        for method in ["GET", "POST", "DELETE"] {
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: 3\r\nConnection: close\r\n\r\n[1]"
            );
            let (status, body) = app.raw(request.as_bytes()).await;
            assert!(
                !(200..300).contains(&status) && status != 500,
                "{method} {path} without a token: {status} {body}"
            );
        }
    }
    assert!(app.tree().is_empty(), "{:?}", app.tree());
}

/// A server in read-only mode over a data directory where session `s` holds two snapshots;
/// returns it with their ids, oldest first.
async fn read_only_app(extra: &[(&str, &str)]) -> (TestApp, [String; 2]) {
    let writer = TestApp::with(&[("SNAPKEEP_FSYNC", "false")]).await;
    let first = writer.save("s", r#"{"v":1}"#).await;
    let second = writer.save("s", r#"{"v":2}"#).await;
    let stopped = writer.stop().await;
    let mut vars = vec![("SNAPKEEP_FSYNC", "false"), ("SNAPKEEP_READ_ONLY", "true")];
    vars.extend_from_slice(extra);
    let app = TestApp::restart(stopped, &vars).await;
    (app, [first, second])
}

both!(read_only_mode_keeps_every_read_working);
async fn read_only_mode_keeps_every_read_working() {
    let (app, [first, second]) = read_only_app(&[]).await;
    assert_eq!(app.listed("s").await, [second.clone(), first.clone()]);
    let latest = app.get(&format!("{BASE}/s/latest")).await;
    assert_eq!(latest.status(), 200);
    assert_eq!(latest.headers()["x-snapshot-id"], second.as_str());
    assert_eq!(latest.text().await.unwrap(), r#"{"v":2}"#);
    let one = app.get(&format!("{BASE}/s/{first}")).await;
    assert_eq!(one.status(), 200);
    assert_eq!(one.text().await.unwrap(), r#"{"v":1}"#);
    let head = app
        .client
        .head(app.url(&format!("{BASE}/s/latest")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(app.listed("unknown").await, Vec::<String>::new());
}

both!(read_only_mode_refuses_every_write_and_delete_with_503_and_changes_nothing);
async fn read_only_mode_refuses_every_write_and_delete_with_503_and_changes_nothing() {
    let (app, [first, _]) = read_only_app(&[]).await;
    let before = app.tree();
    let c = &app.client;
    let requests = [
        c.post(app.session_url("s"))
            .header(CONTENT_TYPE, "application/json")
            .body(r#"{"v":3}"#),
        c.patch(app.session_url("s"))
            .header(CONTENT_TYPE, "application/merge-patch+json")
            .body(r#"{"w":1}"#),
        c.delete(app.url(&format!("{BASE}/s/{first}"))),
        c.delete(app.session_url("s")),
        c.post(app.session_url("new"))
            .header(CONTENT_TYPE, "application/json")
            .body("[1]"),
        c.delete(app.session_url("new")),
    ];
    for request in requests {
        assert_error(request.send().await.unwrap(), 503, "read_only").await;
    }
    assert_eq!(app.tree(), before);
}

both!(read_only_mode_still_asks_for_credentials_first);
async fn read_only_mode_still_asks_for_credentials_first() {
    let (app, _) = read_only_app(&[("SNAPKEEP_TOKEN", OPERATOR)]).await;
    let before = app.tree();
    let post = |credential: Option<&str>| {
        let mut request = app
            .client
            .post(app.session_url("s"))
            .header(CONTENT_TYPE, "application/json")
            .body("[3]");
        if let Some(token) = credential {
            request = request.header(AUTHORIZATION, bearer(token));
        }
        request.send()
    };
    assert_error(post(None).await.unwrap(), 401, "unauthorized").await;
    assert_error(post(Some(OPERATOR)).await.unwrap(), 503, "read_only").await;
    let list = app
        .client
        .get(app.session_url("s"))
        .header(AUTHORIZATION, bearer(OPERATOR))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    assert_eq!(app.tree(), before);
}

both!(the_status_route_names_the_auth_mode);
async fn the_status_route_names_the_auth_mode() {
    let expected = [
        (Mode::Open, "none"),
        (Mode::TokenOnly, "token"),
        (Mode::KeyOnly, "session-token"),
        (Mode::Both, "token+session-token"),
    ];
    for (mode, auth) in expected {
        let app = mode.spawn().await;
        let status = json(app.get(BASE).await).await;
        assert_eq!(status["auth"], auth, "{mode:?}: {status}");
        assert_eq!(status["readOnly"], false, "{mode:?}: {status}");
        let text = status.to_string();
        assert!(!text.contains(OPERATOR) && !text.contains(KEY), "{text}");
    }
}

both!(the_status_route_says_when_the_server_is_read_only);
async fn the_status_route_says_when_the_server_is_read_only() {
    let (app, _) = read_only_app(&[("SNAPKEEP_TOKEN", OPERATOR)]).await;
    let status = json(app.get(BASE).await).await;
    assert_eq!(status["readOnly"], true, "{status}");
    assert_eq!(status["auth"], "token", "{status}");
    assert_eq!(status["enabled"], true, "{status}");
}

both!(every_answer_carries_nosniff);
async fn every_answer_carries_nosniff() {
    let app = Mode::TokenOnly.spawn().await;
    let operator = bearer(OPERATOR);
    let saved = app
        .client
        .post(app.session_url("s"))
        .header(AUTHORIZATION, &operator)
        .header(CONTENT_TYPE, "application/json")
        .body("[1]")
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 201);
    assert_eq!(
        saved.headers()["x-content-type-options"],
        "nosniff",
        "a 201"
    );
    let c = &app.client;
    let answers = [
        (
            "a JSON success",
            c.get(app.session_url("s")).header(AUTHORIZATION, &operator),
        ),
        (
            "a snapshot read",
            c.get(app.url(&format!("{BASE}/s/latest")))
                .header(AUTHORIZATION, &operator),
        ),
        (
            "a 404",
            c.get(app.url(&format!("{BASE}/empty/latest")))
                .header(AUTHORIZATION, &operator),
        ),
        ("a 401", c.get(app.session_url("s"))),
        (
            "a 400",
            c.get(app.url(&format!("{BASE}/.hidden")))
                .header(AUTHORIZATION, &operator),
        ),
        ("health", c.get(app.url("/healthz"))),
        ("status", c.get(app.url(BASE))),
        ("an unknown route", c.get(app.url("/nowhere"))),
    ];
    for (what, request) in answers {
        let response = request.send().await.unwrap();
        assert_eq!(
            response.headers()["x-content-type-options"],
            "nosniff",
            "{what} ({})",
            response.status()
        );
    }
}
