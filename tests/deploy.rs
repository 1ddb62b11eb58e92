//! The deployment files in the repo, run for real where this machine can: `deploy/nginx.conf`
//! (the proxy of `compose.yaml`) in front of the real binary with compose's settings. Users
//! behind it each count as themselves for the rate limit, because the file sends
//! `X-Forwarded-For`; the demo page and the one tag come through it.
//!
//! Needs Debian's nginx at /usr/sbin/nginx (`apt-get install nginx`; CI installs it). Without
//! it the test says SKIPPED, except under `CI=true`, where that is a failure. (Docker itself
//! cannot run here: the Dockerfile and compose.yaml are checked by their parts.)

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{BASE, Server};

const NGINX: &str = "/usr/sbin/nginx";

/// nginx on a free loopback port with the repo's `deploy/nginx.conf`, its compose names
/// (`listen 80`, `snapkeep:8080`, the site's root) replaced by this machine's; stopped when
/// dropped.
struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    fn start(dir: &Path, upstream: SocketAddr) -> Self {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let site = std::fs::read_to_string(repo.join("deploy/nginx.conf"))
            .unwrap()
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
            .replace("http://snapkeep:8080", &format!("http://{upstream}"))
            .replace(
                "/usr/share/nginx/html",
                repo.join("deploy/site").to_str().unwrap(),
            );
        assert!(
            site.contains(&format!("127.0.0.1:{port}")) && site.contains(&upstream.to_string()),
            "deploy/nginx.conf no longer has the shape this test rewrites:\n{site}"
        );
        // As root, nginx's workers would run as nobody, who cannot reach a temp dir.
        let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
        let d = dir.display();
        let conf = format!(
            "{user}pid {d}/nginx.pid;\nevents {{}}\nhttp {{\n  access_log off;\n  \
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n{site}\n}}\n",
            user = if root { "user root;\n" } else { "" },
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let nginx = Self {
            child: Command::new(NGINX)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(&conf_path)
                .arg("-p")
                .arg(dir)
                .args(["-g", "daemon off;"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
            port,
        };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return nginx;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        panic!("nginx did not start:\n{log}");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers too.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn twenty_users_behind_the_deploy_nginx_each_save_and_the_demo_page_comes_through() {
    if !Path::new(NGINX).exists() {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!in_ci, "no nginx at {NGINX} under CI=true");
        support::skipped("the deploy/nginx.conf test: no nginx (apt-get install nginx)");
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    // compose.yaml's settings, with the proxy's loopback address as the one trusted.
    let server = Server::start(
        &data,
        &[
            ("SNAPKEEP_TRUSTED_PROXIES", "127.0.0.1/32"),
            ("SNAPKEEP_RATE_LIMIT", "5"),
            ("SNAPKEEP_RETAIN_LAST", "20"),
            ("SNAPKEEP_FSYNC", "false"),
        ],
    );
    server.wait_prepared();
    let nginx = Nginx::start(temp.path(), server.addr);

    // 20 users, each from its own loopback address, each saving once, at once.
    let saves: Vec<_> = (2..22u8)
        .map(|user| {
            let client = reqwest::Client::builder()
                .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, user)))
                .build()
                .unwrap();
            let url = nginx.url(&format!("{BASE}/user-{user}"));
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(format!("{{\"user\":{user}}}"))
                    .send()
                    .await
                    .unwrap();
                response.status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for save in saves {
        statuses.push(save.await.unwrap());
    }
    assert_eq!(statuses, vec![201; 20], "{}", server.log_text());
    assert!(
        !server.log_text().contains("carries no X-Forwarded-For"),
        "{}",
        server.log_text()
    );

    // The demo app's page, and the tag it loads through the same proxy.
    let page = reqwest::get(nginx.url("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("/api/backup/_snapkeep-mirror.js"), "{page}");
    let tag = reqwest::get(nginx.url("/api/backup/_snapkeep-mirror.js"))
        .await
        .unwrap();
    assert_eq!(tag.status(), 200);
    assert!(tag.text().await.unwrap().contains("function mirrorPage("));
}
