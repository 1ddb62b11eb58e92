//! A full disk: a write that does not fit is `507 insufficient_storage`, leaves no temp file and
//! loses no snapshot, and works again once space returns. Runs on a 1 MiB tmpfs, so it needs
//! root; elsewhere each test says why it skips.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::{BASE, TestApp, assert_error, json};

/// A 1 MiB tmpfs mounted at `<temp>/mnt`, unmounted on drop (also when the test panics).
struct Tmpfs {
    /// The temp directory holding the mount point, removed after the unmount.
    root: PathBuf,
    mnt: PathBuf,
}

impl Tmpfs {
    /// Mounts it, or says why it cannot.
    fn mount(root: &Path) -> Result<Self, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|err| format!("cannot run `id -u`: {err}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not root, and mounting a tmpfs needs root".into());
        }
        let mnt = root.join("mnt");
        fs::create_dir(&mnt).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&mnt)
            .output()
            .map_err(|err| format!("cannot run mount: {err}"))?;
        if !mounted.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&mounted.stderr).trim()
            ));
        }
        Ok(Self {
            root: root.to_owned(),
            mnt,
        })
    }

    /// Writes a filler file next to the data directory until the filesystem refuses with
    /// `ENOSPC`, and returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.mnt.join("filler");
        let mut file = File::create(&path).unwrap();
        let chunk = vec![b'f'; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(n) => assert!(n > 0, "a write of nothing"),
                Err(err) if err.kind() == ErrorKind::StorageFull => break,
                Err(err) => panic!("filling the disk failed otherwise: {err}"),
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Busy (a server thread still winding down): detach it now, gone when released.
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A tmpfs inside `temp`, or `None` after saying why not (never under CI, whose machine can).
fn mount_or_skip(temp: &tempfile::TempDir) -> Option<Tmpfs> {
    match Tmpfs::mount(temp.path()) {
        Ok(tmpfs) => Some(tmpfs),
        // CI's machine can mount (it runs as root), so there a skip would hide a lost test.
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("CI must run the disk-full tests, but: {reason}")
        }
        Err(reason) => {
            crate::support::skipped(&format!("a disk-full test: {reason}"));
            None
        }
    }
}

/// A server over `<tmpfs>/data`; `None` (after saying why) when a tmpfs cannot be mounted.
/// The guard is returned first so that it is dropped after the server.
async fn on_tmpfs() -> Option<(Tmpfs, TestApp)> {
    let temp = tempfile::tempdir().unwrap();
    let tmpfs = mount_or_skip(&temp)?;
    let data_dir = tmpfs.mnt.join("data");
    let app = TestApp::with_dir(temp, data_dir, &[]).await;
    Some((tmpfs, app))
}

/// A 64 KiB JSON document: far more than a full tmpfs has left.
fn big_body() -> String {
    format!(r#"{{"blob":"{}"}}"#, "b".repeat(64 * 1024))
}

fn temp_files(tree: &[String]) -> Vec<&String> {
    tree.iter().filter(|p| p.ends_with(".tmp")).collect()
}

async fn latest_bytes(app: &TestApp, session: &str) -> (String, Vec<u8>) {
    let response = app.get(&format!("{BASE}/{session}/latest")).await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-snapshot-id"]
        .to_str()
        .unwrap()
        .to_owned();
    (id, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn a_write_that_does_not_fit_is_507_and_earlier_snapshots_stay_intact() {
    let Some((tmpfs, app)) = on_tmpfs().await else {
        return;
    };
    let small = r#"{"small":[1,2,3]}"#;
    let id = app.save("s", small).await;
    let (tree, listed) = (app.tree(), app.listed("s").await);
    tmpfs.fill();

    assert_error(app.post("s", big_body()).await, 507, "insufficient_storage").await;

    assert_eq!(temp_files(&app.tree()), Vec::<&String>::new());
    assert_eq!(app.tree(), tree, "nothing on disk changed");
    assert_eq!(
        latest_bytes(&app, "s").await,
        (id, small.as_bytes().to_vec())
    );
    assert_eq!(app.listed("s").await, listed);
}

#[tokio::test]
async fn a_write_to_a_new_session_on_a_full_disk_is_507_and_leaves_nothing() {
    let Some((tmpfs, app)) = on_tmpfs().await else {
        return;
    };
    app.save("s", r#"{"small":true}"#).await;
    let tree = app.tree();
    tmpfs.fill();

    let response = app.post("fresh", big_body()).await;
    assert_error(response, 507, "insufficient_storage").await;

    // Not even the session directory: a full tmpfs still lets one be made, and the store
    // removes it again when the write into it fails.
    assert_eq!(app.tree(), tree);
    assert!(app.listed("fresh").await.is_empty());
    assert_eq!(app.get(&format!("{BASE}/fresh/latest")).await.status(), 404);
}

#[tokio::test]
async fn once_space_returns_the_same_write_succeeds() {
    let Some((tmpfs, app)) = on_tmpfs().await else {
        return;
    };
    app.save("s", r#"{"small":true}"#).await;
    let filler = tmpfs.fill();
    let body = big_body();
    assert_error(
        app.post("s", body.clone()).await,
        507,
        "insufficient_storage",
    )
    .await;

    fs::remove_file(filler).unwrap();

    let response = app.post("s", body.clone()).await;
    assert_eq!(response.status(), 201);
    let id = json(response).await["id"].as_str().unwrap().to_owned();
    assert_eq!(latest_bytes(&app, "s").await, (id, body.into_bytes()));
    assert_eq!(temp_files(&app.tree()), Vec::<&String>::new());
}

#[tokio::test]
async fn a_deduplicated_write_still_answers_200_on_a_full_disk() {
    let Some((tmpfs, app)) = on_tmpfs().await else {
        return;
    };
    let body = r#"{"unchanged":"state"}"#;
    let id = app.save("s", body).await;
    let tree = app.tree();
    tmpfs.fill();

    let response = app.post("s", body).await;
    assert_eq!(response.status(), 200);
    let answer = json(response).await;
    assert_eq!(answer["deduplicated"], true, "{answer}");
    assert_eq!(answer["id"], id.as_str(), "{answer}");
    assert_eq!(app.tree(), tree, "nothing on disk changed");
}

/// A restore replica: the data on a read-only mount, the server in read-only mode. It is ready
/// (its probe only reads) and serves; a server that would write refuses to start there.
#[tokio::test]
async fn a_read_only_server_on_a_read_only_mount_is_ready_and_serves() {
    let temp = tempfile::tempdir().unwrap();
    let Some(tmpfs) = mount_or_skip(&temp) else {
        return;
    };
    let data_dir = tmpfs.mnt.join("data");
    let id = "20261123T185337.123456Z-0123456789abcdef";
    fs::create_dir_all(data_dir.join("s")).unwrap();
    fs::write(data_dir.join("s").join(format!("{id}.json")), "[\"kept\"]").unwrap();
    let remounted = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&tmpfs.mnt)
        .status()
        .unwrap();
    assert!(remounted.success());

    let replica = TestApp::with_dir(
        tempfile::tempdir().unwrap(),
        data_dir.clone(),
        &[("SNAPKEEP_READ_ONLY", "true")],
    )
    .await;
    assert_eq!(replica.get("/readyz").await.status(), 200);
    let latest = replica.get(&format!("{BASE}/s/latest")).await;
    assert_eq!(latest.text().await.unwrap(), "[\"kept\"]");
    assert_error(replica.post("s", "[1]").await, 503, "read_only").await;

    // A server that would write there does not start: it says why and what to do.
    let pairs = [(
        "SNAPKEEP_DATA_DIR".to_string(),
        data_dir.display().to_string(),
    )];
    let (config, _) = snapkeep::config::Config::from_vars(pairs).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let state = snapkeep::http::App::new(config);
    let refused = snapkeep::server::serve(listener, state, std::future::pending())
        .await
        .expect_err("a writer on a read-only mount must not start");
    let why = format!("{refused:#}");
    assert!(why.contains(&data_dir.display().to_string()), "{why}");
    assert!(
        why.contains("is not writable") && why.contains("SNAPKEEP_READ_ONLY"),
        "{why}"
    );
    drop(replica);
    drop(tmpfs);
    drop(temp);
}
