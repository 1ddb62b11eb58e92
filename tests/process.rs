//! Tests of the real binary as a process: exit codes, configuration errors, signals, restarts
//! and crashes (SIGKILL in the middle of a stream of writes).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;

mod support;

use support::{BASE, Server, listed_ids, snapkeep};

fn run(vars: &[(&str, &str)], args: &[&str]) -> Output {
    snapkeep(vars).args(args).output().unwrap()
}

async fn save(client: &reqwest::Client, server: &Server, session: &str, body: String) -> String {
    let response = client
        .post(server.url(&format!("{BASE}/{session}")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let answer: serde_json::Value = response.json().await.unwrap();
    answer["id"].as_str().unwrap().to_owned()
}

#[test]
fn a_bad_setting_exits_2_with_one_line_naming_it() {
    let cases = [
        ("SNAPKEEP_RETAIN_LAST", "0", "a whole number of at least 1"),
        (
            "SNAPKEEP_MAX_BODY_BYTES",
            "lots",
            "a whole number of at least 1",
        ),
        ("SNAPKEEP_ENABLED", "maybe", "true or false"),
        ("SNAPKEEP_LISTEN", "localhost", "an IP address and port"),
        (
            "SNAPKEEP_BASE_PATH",
            "no-slash",
            "a path such as /api/backup",
        ),
        ("SNAPKEEP_FSYNC", "sometimes", "true or false"),
        ("SNAPKEEP_LOG", "a=b=c", "target=level directives"),
        (
            "SNAPKEEP_BASE_PATH",
            "/healthz",
            "not /healthz, /readyz, /metrics or /snapkeep.js",
        ),
        (
            "SNAPKEEP_BASE_PATH",
            "/metrics",
            "not /healthz, /readyz, /metrics or /snapkeep.js",
        ),
        (
            "SNAPKEEP_BASE_PATH",
            "/snapkeep.js",
            "not /healthz, /readyz, /metrics or /snapkeep.js",
        ),
        ("SNAPKEEP_DATA_DIR", "", "a directory path"),
    ];
    for (name, value, expects) in cases {
        let output = run(&[(name, value)], &[]);
        assert_eq!(output.status.code(), Some(2), "{name}={value}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(name), "{stderr}");
        assert!(stderr.contains(expects), "{stderr}");
        assert!(stderr.contains(&format!("got {value:?}")), "{stderr}");
    }
}

#[test]
fn environment_text_that_is_not_utf8_is_an_error_only_for_snapkeep_settings() {
    use std::os::unix::ffi::OsStrExt;
    let not_utf8 = std::ffi::OsStr::from_bytes(b"/tmp/\xff");

    let output = snapkeep(&[])
        .env("SNAPKEEP_DATA_DIR", not_utf8)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("SNAPKEEP_DATA_DIR must be UTF-8 text (the value is not shown)"),
        "{stderr}"
    );

    // Another program's variable is none of snapkeep's business.
    let output = snapkeep(&[("SNAPKEEP_RETAIN_LAST", "0")])
        .env("OTHER_TOOL", not_utf8)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("SNAPKEEP_RETAIN_LAST"));
}

#[test]
fn an_address_in_use_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let output = run(
        &[
            ("SNAPKEEP_LISTEN", addr.as_str()),
            ("SNAPKEEP_DATA_DIR", data.path().to_str().unwrap()),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

/// A data directory that start-up's background preparation cannot count (a session directory
/// the server's user may not read) stops the server with exit 2, as an unusable directory does
/// before listening: serving writes without counts would turn the quotas off.
#[test]
fn a_data_dir_that_cannot_be_counted_stops_the_server_with_exit_2() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        assert!(
            std::env::var("CI").is_err(),
            "needs root to run the server as nobody"
        );
        support::skipped("needs root to run the server as nobody");
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    std::fs::create_dir_all(data.join("locked")).unwrap();
    let mode = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    mode(temp.path(), 0o755);
    mode(&data, 0o777);
    mode(&data.join("locked"), 0o700); // root's: nobody cannot list it
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            support::BIN,
        ])
        .env_clear()
        .env("SNAPKEEP_LISTEN", "127.0.0.1:0")
        .env("SNAPKEEP_DATA_DIR", &data)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = (0..200)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            child.try_wait().unwrap()
        })
        .unwrap_or_else(|| {
            child.kill().unwrap();
            panic!("the server kept running on a directory it cannot count");
        });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot use the data directory"), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
}

#[test]
fn an_unusable_data_dir_exits_2() {
    let temp = tempfile::tempdir().unwrap();
    let file = temp.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let output = run(
        &[
            ("SNAPKEEP_LISTEN", "127.0.0.1:0"),
            ("SNAPKEEP_DATA_DIR", file.to_str().unwrap()),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("cannot use the data directory"), "{stderr}");
}

#[tokio::test]
async fn sigterm_stops_gracefully_and_a_restart_serves_the_same_snapshots() {
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut server = Server::start(data.path(), &[]);
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(save(&client, &server, "s", format!("{{\"n\":{n}}}")).await);
    }
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().code(), Some(0), "{}", server.log_text());
    assert!(server.log_text().contains("stopped"));

    let server = Server::start(data.path(), &[]);
    let listed = listed_ids(&client, &server.url(&format!("{BASE}/s"))).await;
    ids.reverse();
    assert_eq!(listed, ids);
    let latest = client
        .get(server.url(&format!("{BASE}/s/latest")))
        .send()
        .await
        .unwrap();
    assert_eq!(latest.text().await.unwrap(), "{\"n\":2}");
}

/// Sends the head and the first half of a POST, so that the request is in flight.
fn start_upload(server: &Server, body: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    let head = format!(
        "POST {BASE}/slow HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .write_all(&body.as_bytes()[..body.len() / 2])
        .unwrap();
    stream
}

/// Waits until the server has read a request head (it logs one span per request at debug).
fn wait_for_log(server: &Server, needle: &str) {
    for _ in 0..200 {
        if server.log_text().contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("no {needle:?} in the log: {}", server.log_text());
}

#[test]
fn sigterm_lets_an_upload_in_flight_finish_and_keeps_it() {
    use std::io::{Read, Write};
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path(), &[("SNAPKEEP_LOG", "info,tower_http=debug")]);
    let body = format!("{{\"slow\":\"{}\"}}", "s".repeat(10_000));
    let mut upload = start_upload(&server, &body);
    wait_for_log(&server, "started processing request");

    server.signal(Signal::SIGTERM);
    wait_for_log(&server, "shutting down");
    // New connections are refused once the stop has begun...
    assert!(std::net::TcpStream::connect(server.addr).is_err());
    // ...but the request in flight completes and is acknowledged.
    upload
        .write_all(&body.as_bytes()[body.len() / 2..])
        .unwrap();
    let mut answer = String::new();
    upload.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_eq!(server.wait().code(), Some(0), "{}", server.log_text());

    let files: Vec<_> = std::fs::read_dir(data.path().join("slow"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1);
    let stored = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    assert_eq!(stored, body);
}

/// Open change feeds would stream for as long as their clients stay: a stop ends them at once,
/// so the process exits well within its grace period, and cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_open_change_feeds_exits_within_the_grace_period() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path(), &[("SNAPKEEP_SHUTDOWN_TIMEOUT", "5s")]);
    let client = reqwest::Client::new();
    let mut feeds = Vec::new();
    for n in 0..20 {
        let url = server.url(&format!("{BASE}/s{n}/events"));
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        feeds.push(response);
    }
    let started = std::time::Instant::now();
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().code(), Some(0), "{}", server.log_text());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "took {took:?}: the feeds held the stop"
    );
    assert!(
        !server.log_text().contains("still in flight"),
        "{}",
        server.log_text()
    );
    for mut feed in feeds {
        // Each stream ended (rather than hanging): its body is complete.
        let rest = tokio::time::timeout(Duration::from_secs(2), feed.chunk()).await;
        assert!(matches!(rest, Ok(Ok(None)) | Ok(Err(_))), "{rest:?}");
    }
}

#[test]
fn sigterm_does_not_wait_past_the_shutdown_timeout_for_a_stalled_upload() {
    let data = tempfile::tempdir().unwrap();
    let vars = [
        ("SNAPKEEP_LOG", "info,tower_http=debug"),
        ("SNAPKEEP_SHUTDOWN_TIMEOUT", "1s"),
        ("SNAPKEEP_BODY_TIMEOUT", "1h"),
    ];
    let mut server = Server::start(data.path(), &vars);
    server.wait_prepared();
    // 4 MiB, half of it sent: past the 1 MiB a body may take in memory, so it is being
    // written to a temp file when the stop comes.
    let body = format!("[\"{}\"]", "x".repeat(4 << 20));
    let _stalled = start_upload(&server, &body);
    wait_for_log(&server, "started processing request");
    let top_level = || -> Vec<String> {
        let names = std::fs::read_dir(data.path()).unwrap();
        names
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    for _ in 0..200 {
        if top_level()
            .iter()
            .any(|name| name.starts_with(".snapkeep-upload-"))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(
        top_level().len(),
        1,
        "the upload is spooled: {:?}",
        top_level()
    );

    server.signal(Signal::SIGTERM);
    // wait() allows 10 s; the shutdown timeout is 1 s and the body timeout an hour.
    assert_eq!(server.wait().code(), Some(0), "{}", server.log_text());
    assert!(
        server
            .log_text()
            .contains("stopped with requests still in flight")
    );
    assert_eq!(
        top_level(),
        Vec::<String>::new(),
        "nothing half-written is left"
    );
}

/// A stop whose grace period runs out while a large write is under way: whatever the timing,
/// the snapshot is on disk exactly when its 201 reached the client.
#[test]
fn a_write_at_the_shutdown_deadline_is_either_answered_or_absent() {
    use std::io::{Read, Write};
    let body = format!("{{\"blob\":\"{}\"}}", "x".repeat(4 * 1024 * 1024));
    let mut outcomes = Vec::new();
    for round in 0..10 {
        let data = tempfile::tempdir().unwrap();
        let vars = [
            ("SNAPKEEP_SHUTDOWN_TIMEOUT", "1ms"),
            ("SNAPKEEP_RETAIN_LAST", "5"),
        ];
        let mut server = Server::start(data.path(), &vars);
        let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
        let head = format!(
            "POST {BASE}/edge HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(random_between(0, 400)));
        server.signal(Signal::SIGTERM);
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert_eq!(server.wait().code(), Some(0), "round {round}");

        let acknowledged = answer.starts_with("HTTP/1.1 201");
        let stored = std::fs::read_dir(data.path().join("edge"))
            .map(|dir| {
                dir.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "json")
                })
                .count()
            })
            .unwrap_or(0);
        assert_eq!(
            stored,
            usize::from(acknowledged),
            "round {round}: answer {:?}",
            answer.lines().next()
        );
        outcomes.push(answer.lines().next().unwrap_or("(no answer)").to_owned());
    }
    println!("writes at the shutdown deadline: {outcomes:?}");
}

#[test]
fn healthcheck_exits_0_when_the_server_is_ready_and_1_when_not() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    server.wait_prepared();
    let addr = server.addr.to_string();
    let up = run(&[("SNAPKEEP_LISTEN", addr.as_str())], &["healthcheck"]);
    assert_eq!(
        up.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );

    // A wildcard listen address is checked through loopback, as in the container.
    let wildcard = format!("0.0.0.0:{}", server.addr.port());
    let up = run(&[("SNAPKEEP_LISTEN", wildcard.as_str())], &["healthcheck"]);
    assert_eq!(
        up.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    drop(server);

    let down = run(&[("SNAPKEEP_LISTEN", addr.as_str())], &["healthcheck"]);
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("unhealthy"));

    // Running is not enough: a server that cannot reach its bucket answers /healthz, and is
    // still not healthy.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let vars = [
        ("SNAPKEEP_STORAGE", "s3://nowhere-bucket"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "x"),
        ("AWS_SECRET_ACCESS_KEY", "y"),
        ("SNAPKEEP_STORAGE_TIMEOUT", "1s"),
    ];
    let stuck = Server::start(data.path(), &vars);
    let listen = stuck.addr.to_string();
    let unready = run(&[("SNAPKEEP_LISTEN", listen.as_str())], &["healthcheck"]);
    assert_eq!(unready.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unready.stderr).contains("/readyz with 503"));
}

/// A bind-mounted data directory that the container's user cannot write (root's, the usual
/// case) stops the start with exit 2 and one line naming the directory, the user and the fix;
/// it never starts answering every write with 500.
#[test]
fn an_unwritable_data_dir_stops_the_start_with_the_fix() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        assert!(
            std::env::var("CI").is_err(),
            "needs root to run the server as nobody"
        );
        support::skipped("needs root to run the server as nobody");
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            support::BIN,
        ])
        .env_clear()
        .env("SNAPKEEP_LISTEN", "127.0.0.1:0")
        .env("SNAPKEEP_DATA_DIR", &data)
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for needed in [
        data.to_str().unwrap(),
        "not writable",
        "uid 65534",
        "chown -R 65534:65534",
    ] {
        assert!(stderr.contains(needed), "{needed:?} missing: {stderr}");
    }
}

/// Writes from several clients, SIGKILL at a random moment, then: every acknowledged snapshot
/// is on disk byte for byte, no file holds a partial body, and the next start removes the temp
/// files and serves them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_writes_loses_no_acknowledged_snapshot() {
    const ROUNDS: usize = 10;
    let (mut total_acknowledged, mut total_present, mut total_leftover_temps) = (0, 0, 0);
    for round in 0..ROUNDS {
        let data = tempfile::tempdir().unwrap();
        let vars = [("SNAPKEEP_RETAIN_LAST", "100000")];
        let mut server = Server::start(data.path(), &vars);
        let acknowledged = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
        let sent = Arc::new(Mutex::new(Vec::<String>::new()));
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let (url, acknowledged, sent) = (
                    server.url(&format!("{BASE}/crash")),
                    acknowledged.clone(),
                    sent.clone(),
                );
                tokio::spawn(
                    async move { write_until_refused(writer, url, acknowledged, sent).await },
                )
            })
            .collect();

        tokio::time::sleep(Duration::from_millis(random_between(150, 600))).await;
        server.signal(Signal::SIGKILL);
        server.wait();
        for writer in writers {
            writer.await.unwrap();
        }

        let acknowledged = acknowledged.lock().unwrap().clone();
        let sent = sent.lock().unwrap().clone();
        assert!(
            acknowledged.len() >= 4,
            "round {round}: too few writes to test anything"
        );
        let session = data.path().join("crash");
        for (id, body) in &acknowledged {
            let on_disk = std::fs::read_to_string(session.join(format!("{id}.json")));
            assert_eq!(
                on_disk.as_deref().ok(),
                Some(body.as_str()),
                "round {round}: {id}"
            );
            total_present += 1;
        }
        for file in snapshot_files(&session) {
            let content = std::fs::read_to_string(&file).unwrap();
            assert!(
                sent.contains(&content),
                "round {round}: partial file {file:?}"
            );
        }

        total_acknowledged += acknowledged.len();
        total_leftover_temps += std::fs::read_dir(&session)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        let server = Server::start(data.path(), &vars);
        server.wait_prepared();
        let leftovers: Vec<_> = std::fs::read_dir(&session)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "round {round}: {leftovers:?}");
        let client = reqwest::Client::new();
        for (id, body) in &acknowledged {
            let response = client
                .get(server.url(&format!("{BASE}/crash/{id}")))
                .send()
                .await;
            assert_eq!(
                response.unwrap().text().await.unwrap(),
                *body,
                "round {round}"
            );
        }
    }
    // Figures for the record: cargo test --test process sigkill -- --nocapture
    println!(
        "SIGKILL during writes, {ROUNDS} rounds: {total_acknowledged} acknowledged, \
         {total_present} present byte for byte, {total_leftover_temps} temp files left by \
         the kills, 0 after restart"
    );
}

async fn write_until_refused(
    writer: usize,
    url: String,
    acknowledged: Arc<Mutex<Vec<(String, String)>>>,
    sent: Arc<Mutex<Vec<String>>>,
) {
    let client = reqwest::Client::new();
    let padding = "x".repeat(8 * 1024);
    for n in 0.. {
        let body = format!("{{\"writer\":{writer},\"n\":{n},\"pad\":\"{padding}\"}}");
        sent.lock().unwrap().push(body.clone());
        let Ok(response) = client.post(&url).body(body.clone()).send().await else {
            return;
        };
        let Ok(answer) = response.json::<serde_json::Value>().await else {
            return;
        };
        let id = answer["id"].as_str().expect("a write answers with its id");
        acknowledged.lock().unwrap().push((id.to_owned(), body));
    }
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect()
}

/// A pseudo-random number of milliseconds, different on every call.
fn random_between(low: u64, high: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    low + nanos % (high - low)
}

const OPERATOR_TOKEN: &str = "operator-token-from-a-docker-secret";
const SIGNING_KEY: &str = "signing-key-for-session-tokens-0123";

/// `curl`-like: one request with an optional bearer token; the status code.
async fn status_with(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> u16 {
    let mut request = reqwest::Client::new()
        .request(method, server.url(path))
        .header("content-type", "application/json")
        .body("{\"ok\":true}");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn the_operator_token_can_come_from_a_file() {
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("snapkeep_token");
    std::fs::write(&file, format!("{OPERATOR_TOKEN}\n")).unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(
        data.path(),
        &[("SNAPKEEP_TOKEN_FILE", file.to_str().unwrap())],
    );

    let path = format!("{BASE}/s");
    assert_eq!(
        status_with(&server, reqwest::Method::POST, &path, None).await,
        401
    );
    let token = Some(OPERATOR_TOKEN);
    assert_eq!(
        status_with(&server, reqwest::Method::POST, &path, token).await,
        201
    );
    assert!(
        !server.log_text().contains(OPERATOR_TOKEN),
        "the token is never logged"
    );
}

#[tokio::test]
async fn token_mints_a_session_token_that_the_server_accepts() {
    let output = run(
        &[("SNAPKEEP_SIGNING_KEY", SIGNING_KEY)],
        &["token", "user-42", "--ttl", "1h"],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "the token alone on stdout: {stdout:?}"
    );
    let token = stdout.trim();
    assert!(token.starts_with("user-42:"), "{token}");

    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[("SNAPKEEP_SIGNING_KEY", SIGNING_KEY)]);
    let mine = format!("{BASE}/user-42");
    let theirs = format!("{BASE}/user-43");
    assert_eq!(
        status_with(&server, reqwest::Method::POST, &mine, Some(token)).await,
        201
    );
    assert_eq!(
        status_with(&server, reqwest::Method::GET, &theirs, Some(token)).await,
        403
    );

    let no_key = run(&[], &["token", "user-42"]);
    assert_eq!(no_key.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("SNAPKEEP_SIGNING_KEY"));
}

/// The minting recipes printed in docs/security.md, run with each language's standard library
/// only.
#[tokio::test]
async fn the_security_doc_recipes_mint_tokens_in_node_and_python() {
    let doc = include_str!("../docs/security.md");
    // The document's block in that language that defines the function.
    let snippet = |fence: &str, defines: &str| {
        doc.split(fence)
            .skip(1)
            .map(|code| &code[..code.find("```").unwrap()])
            .find(|code| code.contains(defines))
            .unwrap_or_else(|| panic!("no {fence} block in docs/security.md defines {defines}"))
            .to_owned()
    };
    let node = format!(
        "{}\nprocess.stdout.write(mintSnapkeepToken(process.argv[1], 'user-42', 3600));",
        snippet("```js\n", "function mintSnapkeepToken")
    );
    let python = format!(
        "{}\nimport sys\nsys.stdout.write(mint_snapkeep_token(sys.argv[1].encode(), 'user-42', 3600))",
        snippet("```python\n", "def mint_snapkeep_token")
    );
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[("SNAPKEEP_SIGNING_KEY", SIGNING_KEY)]);
    for (program, flag, code) in [("node", "-e", node), ("python3", "-c", python)] {
        let Ok(output) = Command::new(program)
            .args([flag, code.as_str(), SIGNING_KEY])
            .output()
        else {
            // CI's machine has both; a developer's might not.
            eprintln!("skipping {program}: not installed");
            continue;
        };
        assert!(
            output.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let token = String::from_utf8(output.stdout).unwrap();
        let path = format!("{BASE}/user-42");
        let status = status_with(&server, reqwest::Method::POST, &path, Some(&token)).await;
        assert!(
            status == 201 || status == 200,
            "{program}'s token: {status}"
        );
    }
}

#[test]
fn an_open_server_on_a_public_address_warns_about_it() {
    // The warning comes before the "listening" line that Server::start waits for, so it is
    // in the log (or not) by the time start returns.
    let data = tempfile::tempdir().unwrap();
    let open = Server::start(data.path(), &[("SNAPKEEP_LISTEN", "0.0.0.0:0")]);
    let log = open.log_text();
    assert!(
        log.contains("neither SNAPKEEP_TOKEN nor SNAPKEEP_SIGNING_KEY"),
        "{log}"
    );
    assert!(log.contains("anyone who can reach it"), "{log}");

    let guarded = Server::start(
        data.path(),
        &[
            ("SNAPKEEP_LISTEN", "0.0.0.0:0"),
            ("SNAPKEEP_TOKEN", OPERATOR_TOKEN),
        ],
    );
    assert!(
        !guarded.log_text().contains("WARN"),
        "{}",
        guarded.log_text()
    );
}

/// A proxy that is trusted but sends no X-Forwarded-For makes every client look like the
/// proxy to the rate limit: the server says so in its log, once.
#[tokio::test]
async fn a_trusted_proxy_without_forwarded_for_is_warned_about_once() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[("SNAPKEEP_TRUSTED_PROXIES", "127.0.0.1")]);
    let client = reqwest::Client::new();
    let forwarded = client
        .get(server.url(&format!("{BASE}/s")))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status(), 200);
    assert!(!server.log_text().contains("carries no X-Forwarded-For"));
    for _ in 0..2 {
        let url = server.url(&format!("{BASE}/s"));
        assert_eq!(client.get(url).send().await.unwrap().status(), 200);
    }
    let log = server.log_text();
    assert_eq!(
        log.matches("carries no X-Forwarded-For").count(),
        1,
        "{log}"
    );
    assert!(log.contains("proxy_set_header X-Forwarded-For"), "{log}");
}
