//! A real S3-compatible server for the tests: moto's (`pip install 'moto[server]'`), started
//! once per test binary on a free port of 127.0.0.1 and stopped when the binary exits. Each
//! test takes a prefix of its own in one bucket.
//!
//! Without `moto_server` on PATH the S3 tests are skipped, and say so on the terminal; under
//! `CI=true` that is a failure instead.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

/// The bucket every test's prefix is in.
pub const BUCKET: &str = "snapkeep-tests";

pub struct Moto {
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    _child: Child,
    /// Held open: when the test binary exits, it closes, and the wrapper stops moto.
    _stdin: ChildStdin,
}

static MOTO: OnceLock<Option<Moto>> = OnceLock::new();

/// The moto server of this test binary, started on first use; `None` (after saying so) when
/// there is none to start.
pub fn moto() -> Option<&'static Moto> {
    MOTO.get_or_init(start).as_ref()
}

impl Moto {
    /// The variables that point snapkeep at `prefix` in the test bucket.
    pub fn vars(&self, prefix: &str) -> Vec<(String, String)> {
        [
            ("SNAPKEEP_STORAGE", format!("s3://{BUCKET}/{prefix}")),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "snapkeep-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "snapkeep-test-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// A client of the test bucket, as an operator's tool would use it.
    fn bucket(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_access_key_id("snapkeep-test")
            .with_secret_access_key("snapkeep-test-secret")
            .with_region("us-east-1")
            .build()
            .unwrap()
    }

    /// Lists the keys under `prefix` in the test bucket (unsigned: moto takes a listing).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let path = format!("/{BUCKET}?list-type=2&prefix={prefix}");
        let (status, body) = request(&self.endpoint, "GET", &path);
        assert_eq!(status, 200, "listing {prefix}");
        let text = String::from_utf8(body).unwrap();
        text.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }

    /// The object at `key` in the test bucket, or `None`.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        use object_store::ObjectStoreExt;
        match self.bucket().get(&key.into()).await {
            Ok(got) => Some(got.bytes().await.unwrap().to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(err) => panic!("getting {key}: {err}"),
        }
    }

    /// Writes `bytes` at `key` in the test bucket.
    pub async fn put(&self, key: &str, bytes: &[u8]) {
        use object_store::ObjectStoreExt;
        let payload = object_store::PutPayload::from(bytes.to_vec());
        self.bucket().put(&key.into(), payload).await.unwrap();
    }

    /// Deletes `key` from the test bucket.
    pub async fn delete(&self, key: &str) {
        use object_store::ObjectStoreExt;
        self.bucket().delete(&key.into()).await.unwrap();
    }
}

fn start() -> Option<Moto> {
    let found = Command::new("sh")
        .args(["-c", "command -v moto_server"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !in_ci,
            "moto_server is not on PATH and CI=true: pip install 'moto[server]'"
        );
        // Straight to the terminal: the test harness captures only print! and eprint!.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the S3 backend's tests (no moto_server on PATH; pip install 'moto[server]')"
        );
        return None;
    }
    // The wrapper stops moto when its stdin closes, which happens when this process exits,
    // however it exits.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "moto_server -H 127.0.0.1 -p 0 2>&1 & pid=$!; read _; kill $pid",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh runs");
    let stdin = child.stdin.take().unwrap();
    let output = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    // Keep reading, so moto never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in output.lines().map_while(Result::ok) {
            if let Some(address) = line.split("Running on ").nth(1) {
                let _ = tx.send(address.trim().to_owned());
            }
        }
    });
    let endpoint = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("moto_server did not start within 30 s");
    let (status, body) = request(&endpoint, "PUT", &format!("/{BUCKET}"));
    assert_eq!(
        status,
        200,
        "creating the bucket: {}",
        String::from_utf8_lossy(&body)
    );
    Some(Moto {
        endpoint,
        _child: child,
        _stdin: stdin,
    })
}

/// One plain HTTP/1.1 request, unsigned (moto takes it for a bucket), and its status and body.
fn request(endpoint: &str, method: &str, path: &str) -> (u16, Vec<u8>) {
    let body = b"";
    let host = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let status = String::from_utf8_lossy(&answer[9..12]).parse().unwrap();
    let body = answer[split + 4..].to_vec();
    (status, body)
}
