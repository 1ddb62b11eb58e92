//! Tests of the data-directory subcommands as processes: `list`, `show`, `verify`, `prune` and
//! `restore`, their text and JSON output, their exit codes, and running next to a live server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use time::macros::datetime;

mod support;

use support::{BASE, Server, listed_ids, seed, snapkeep};

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {self:?}"))
    }

    /// The stdout lines with runs of spaces (column padding) collapsed to one.
    fn lines(&self) -> Vec<String> {
        self.stdout.lines().map(squeeze).collect()
    }
}

fn squeeze(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The binary with a clean environment (only `vars` apply), working on `data`.
fn snapkeep_on(data: &Path, vars: &[(&str, &str)]) -> Command {
    let mut command = snapkeep(vars);
    command.arg("--data-dir").arg(data);
    command
}

fn cli(data: &Path, vars: &[(&str, &str)], args: &[&str]) -> Run {
    let output = snapkeep_on(data, vars).args(args).output().unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Makes a file look as if it was last written an hour ago.
fn age(path: &Path) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
}

/// Every file under `dir` with its bytes and modification time.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|entry| entry.file_type().is_file())
        .map(|entry| {
            let path = entry.path().to_path_buf();
            let modified = entry.metadata().unwrap().modified().unwrap();
            (path.clone(), (std::fs::read(&path).unwrap(), modified))
        })
        .collect()
}

/// The snapshot file names in one session directory, sorted.
fn snapshot_files(data: &Path, session: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join(session))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    names
}

fn assert_one_error_line(run: &Run, needle: &str) {
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(run.stderr.contains(needle), "{run:?}");
    assert_eq!(run.stdout, "", "{run:?}");
}

/// A session `s` with three snapshots on three days, and a session `t` with one.
struct Seeded {
    data: tempfile::TempDir,
    s: [String; 3],
    t: String,
}

fn seeded() -> Seeded {
    let data = tempfile::tempdir().unwrap();
    let s = [
        seed(
            data.path(),
            "s",
            datetime!(2026-11-18 10:00 UTC),
            r#"{"v":1}"#,
        ),
        seed(
            data.path(),
            "s",
            datetime!(2026-11-19 10:00 UTC),
            r#"{"v":22}"#,
        ),
        seed(
            data.path(),
            "s",
            datetime!(2026-11-20 10:00 UTC),
            r#"{"v":333}"#,
        ),
    ];
    let t = seed(data.path(), "t", datetime!(2026-11-21 12:30 UTC), "[]");
    Seeded { data, s, t }
}

// ---------------------------------------------------------------------------------------------
// list

#[test]
fn list_prints_a_header_then_each_session_with_count_bytes_and_newest_time() {
    let seeded = seeded();

    let run = cli(seeded.data.path(), &[], &["list"]);

    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.lines(),
        [
            "SESSION SNAPSHOTS BYTES NEWEST",
            "s 3 24 2026-11-20T10:00:00.000000Z",
            "t 1 2 2026-11-21T12:30:00.000000Z",
        ]
    );
}

#[test]
fn list_json_gives_each_session_with_count_bytes_and_newest_id_or_null() {
    let seeded = seeded();
    std::fs::create_dir(seeded.data.path().join("empty")).unwrap();

    let run = cli(seeded.data.path(), &[], &["--json", "list"]);

    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.json(),
        json!([
            {"session": "empty", "snapshots": 0, "bytes": 0, "newest": null},
            {"session": "s", "snapshots": 3, "bytes": 24, "newest": seeded.s[2]},
            {"session": "t", "snapshots": 1, "bytes": 2, "newest": seeded.t},
        ])
    );
}

#[test]
fn list_reads_the_data_dir_from_snapkeep_data_dir_when_no_flag_is_given() {
    let seeded = seeded();

    let output = snapkeep(&[])
        .env("SNAPKEEP_DATA_DIR", seeded.data.path())
        .args(["list", "--json"])
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(0));
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
}

#[test]
fn list_of_a_session_prints_its_snapshots_newest_first_with_id_created_and_bytes() {
    let seeded = seeded();
    let [first, second, third] = &seeded.s;

    let run = cli(seeded.data.path(), &[], &["list", "s"]);

    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.lines(),
        [
            "ID CREATED BYTES".to_owned(),
            format!("{third} 2026-11-20T10:00:00.000000Z 9"),
            format!("{second} 2026-11-19T10:00:00.000000Z 8"),
            format!("{first} 2026-11-18T10:00:00.000000Z 7"),
        ]
    );
}

#[test]
fn list_of_a_session_as_json_gives_ids_creation_times_and_bytes_newest_first() {
    let seeded = seeded();
    let [first, second, third] = &seeded.s;

    let run = cli(seeded.data.path(), &[], &["list", "s", "--json"]);

    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.json(),
        json!({
            "session": "s",
            "snapshots": [
                {"id": third, "createdAt": "2026-11-20T10:00:00.000000Z", "bytes": 9},
                {"id": second, "createdAt": "2026-11-19T10:00:00.000000Z", "bytes": 8},
                {"id": first, "createdAt": "2026-11-18T10:00:00.000000Z", "bytes": 7},
            ]
        })
    );
}

#[test]
fn list_of_an_invalid_session_exits_2_with_one_line_on_stderr() {
    let seeded = seeded();

    let run = cli(seeded.data.path(), &[], &["list", "../s"]);

    assert_one_error_line(&run, "invalid session \"../s\"");
}

#[test]
fn list_of_a_missing_data_dir_exits_2_naming_the_directory() {
    let temp = tempfile::tempdir().unwrap();
    let missing = temp.path().join("missing");

    let run = cli(&missing, &[], &["list"]);

    assert_one_error_line(&run, missing.to_str().unwrap());
}

// ---------------------------------------------------------------------------------------------
// show

#[test]
fn show_prints_the_latest_snapshots_exact_bytes_and_nothing_more() {
    let seeded = seeded();

    let default = cli(seeded.data.path(), &[], &["show", "s"]);
    let latest = cli(seeded.data.path(), &[], &["show", "s", "latest"]);

    assert_eq!(default.code, Some(0), "{default:?}");
    assert_eq!(default.stdout, r#"{"v":333}"#);
    assert_eq!(default.stderr, "");
    assert_eq!(latest.stdout, r#"{"v":333}"#);
}

#[test]
fn show_prints_the_snapshot_named_by_its_id_or_its_file_name() {
    let seeded = seeded();
    let file_name = format!("{}.json", seeded.s[0]);

    let by_id = cli(seeded.data.path(), &[], &["show", "s", &seeded.s[0]]);
    let by_file_name = cli(seeded.data.path(), &[], &["show", "s", &file_name]);

    assert_eq!(by_id.code, Some(0), "{by_id:?}");
    assert_eq!(by_id.stdout, r#"{"v":1}"#);
    assert_eq!(by_file_name.code, Some(0), "{by_file_name:?}");
    assert_eq!(by_file_name.stdout, r#"{"v":1}"#);
}

#[test]
fn show_of_an_unknown_snapshot_exits_2_with_one_line_on_stderr() {
    let seeded = seeded();
    let unknown = seed(
        tempfile::tempdir().unwrap().path(),
        "x",
        datetime!(2026-11-19 11:00 UTC),
        "{}",
    );

    let run = cli(seeded.data.path(), &[], &["show", "s", &unknown]);

    assert_one_error_line(&run, &format!("no snapshot {unknown} in session s"));
}

#[test]
fn show_of_an_unknown_session_exits_2_with_one_line_on_stderr() {
    let seeded = seeded();

    let run = cli(seeded.data.path(), &[], &["show", "nobody"]);

    assert_one_error_line(&run, "no snapshot latest in session nobody");
}

#[test]
fn show_of_an_id_that_is_not_one_exits_2_with_one_line_on_stderr() {
    let seeded = seeded();

    let run = cli(seeded.data.path(), &[], &["show", "s", "yesterday"]);

    assert_one_error_line(&run, "invalid id \"yesterday\"");
}

#[test]
fn show_of_a_corrupt_snapshot_prints_its_bytes_and_warns_on_stderr() {
    let seeded = seeded();
    let path = seeded.data.path().join(format!("s/{}.json", seeded.s[2]));
    std::fs::write(path, "tampered").unwrap();

    let run = cli(seeded.data.path(), &[], &["show", "s"]);

    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "tampered");
    assert!(run.stderr.contains("does not match its digest"), "{run:?}");
}

// ---------------------------------------------------------------------------------------------
// verify

#[test]
fn verify_of_a_sound_data_dir_counts_the_intact_snapshots_and_exits_0() {
    let seeded = seeded();

    let run = cli(seeded.data.path(), &[], &["verify"]);

    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.lines(),
        ["4 snapshots intact, 0 corrupt, 0 temp, 0 stray"]
    );
}

#[test]
fn verify_reports_a_snapshot_changed_after_it_was_saved_as_corrupt_and_exits_1() {
    let seeded = seeded();
    let corrupt = format!("s/{}.json", seeded.s[1]);
    std::fs::write(seeded.data.path().join(&corrupt), r#"{"v":23}"#).unwrap();

    let run = cli(seeded.data.path(), &[], &["verify"]);

    assert_eq!(run.code, Some(1), "{run:?}");
    let lines = run.lines();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(
        lines[0].starts_with(&format!("corrupt {corrupt} ")),
        "{run:?}"
    );
    assert_eq!(lines[1], "3 snapshots intact, 1 corrupt, 0 temp, 0 stray");
}

#[test]
fn verify_reports_a_temp_file_left_by_a_crash_and_exits_1() {
    let seeded = seeded();
    let temp = format!("s/.{}.json.tmp", seeded.t);
    std::fs::write(seeded.data.path().join(&temp), "[").unwrap();
    age(&seeded.data.path().join(&temp));

    let run = cli(seeded.data.path(), &[], &["verify"]);

    assert_eq!(run.code, Some(1), "{run:?}");
    let lines = run.lines();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(lines[0].starts_with(&format!("temp {temp} ")), "{run:?}");
    assert_eq!(lines[1], "4 snapshots intact, 0 corrupt, 1 temp, 0 stray");
}

#[test]
fn verify_leaves_out_a_fresh_temp_file_as_a_write_in_flight() {
    let seeded = seeded();
    let temp = seeded.data.path().join(format!("s/.{}.json.tmp", seeded.t));
    std::fs::write(temp, "[").unwrap();

    let run = cli(seeded.data.path(), &[], &["verify"]);

    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.lines(),
        ["4 snapshots intact, 0 corrupt, 0 temp, 0 stray"]
    );
}

#[test]
fn verify_reports_stray_files_but_exits_0_when_they_are_all_it_finds() {
    let seeded = seeded();
    std::fs::write(seeded.data.path().join("stray.txt"), "hello").unwrap();
    std::fs::write(seeded.data.path().join("s/NOTES.txt"), "notes").unwrap();

    let run = cli(seeded.data.path(), &[], &["verify"]);

    assert_eq!(run.code, Some(0), "{run:?}");
    let lines = run.lines();
    assert_eq!(lines.len(), 3, "{run:?}");
    assert!(lines[0].starts_with("stray s/NOTES.txt "), "{run:?}");
    assert!(lines[1].starts_with("stray stray.txt "), "{run:?}");
    assert_eq!(lines[2], "4 snapshots intact, 0 corrupt, 0 temp, 2 stray");
}

#[test]
fn verify_leaves_out_a_fresh_readiness_probe_as_a_check_in_flight() {
    let seeded = seeded();
    std::fs::write(seeded.data.path().join(".snapkeep-probe-4242-0.tmp"), "").unwrap();

    let run = cli(seeded.data.path(), &[], &["verify"]);

    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.lines(),
        ["4 snapshots intact, 0 corrupt, 0 temp, 0 stray"]
    );
}

#[test]
fn verify_reports_an_old_readiness_probe_as_a_temp_file() {
    let seeded = seeded();
    let probe = seeded.data.path().join(".snapkeep-probe-4242-0.tmp");
    std::fs::write(&probe, "").unwrap();
    age(&probe);

    let run = cli(seeded.data.path(), &[], &["verify"]);

    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.lines()[0].starts_with("temp .snapkeep-probe-4242-0.tmp "),
        "{run:?}"
    );
}

/// A data directory with one of everything `verify` reports: returns (corrupt, temp) paths.
fn with_problems(seeded: &Seeded) -> (String, String) {
    let data = seeded.data.path();
    let corrupt = format!("s/{}.json", seeded.s[0]);
    std::fs::write(data.join(&corrupt), "tampered").unwrap();
    let temp = format!("t/.{}.json.tmp", seeded.t);
    std::fs::write(data.join(&temp), "[1").unwrap();
    age(&data.join(&temp));
    std::fs::write(data.join("stray.txt"), "hello").unwrap();
    std::fs::write(data.join("s/NOTES.txt"), "notes").unwrap();
    (corrupt, temp)
}

#[test]
fn verify_json_lists_the_corrupt_temp_and_stray_paths_and_whether_all_is_ok() {
    let seeded = seeded();
    let (corrupt, temp) = with_problems(&seeded);

    let run = cli(seeded.data.path(), &[], &["verify", "--json"]);
    std::fs::remove_file(seeded.data.path().join(&corrupt)).unwrap();
    std::fs::remove_file(seeded.data.path().join(&temp)).unwrap();
    let stray_only = cli(seeded.data.path(), &[], &["verify", "--json"]);

    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.json(),
        json!({
            "intact": 3,
            "corrupt": [corrupt],
            "temp": [temp],
            "missing": [],
        "stray": ["s/NOTES.txt", "stray.txt"],
            "ok": false,
        })
    );
    assert_eq!(stray_only.code, Some(0), "{stray_only:?}");
    assert_eq!(stray_only.json()["ok"], true);
}

#[test]
fn verify_changes_nothing_on_disk() {
    let seeded = seeded();
    with_problems(&seeded);
    let before = tree(seeded.data.path());

    let text = cli(seeded.data.path(), &[], &["verify"]);
    let json = cli(seeded.data.path(), &[], &["verify", "--json"]);

    assert_eq!(text.code, Some(1), "{text:?}");
    assert_eq!(json.code, Some(1), "{json:?}");
    assert_eq!(tree(seeded.data.path()), before);
}

// ---------------------------------------------------------------------------------------------
// prune

/// Six snapshots over five days (two on the newest), newest first.
fn five_days(data: &Path) -> Vec<String> {
    let times = [
        datetime!(2026-11-20 18:00 UTC),
        datetime!(2026-11-20 09:00 UTC),
        datetime!(2026-11-19 10:00 UTC),
        datetime!(2026-11-18 10:00 UTC),
        datetime!(2026-11-17 10:00 UTC),
        datetime!(2026-11-16 10:00 UTC),
    ];
    times
        .iter()
        .enumerate()
        .map(|(n, at)| seed(data, "s", *at, &format!("{{\"n\":{n}}}")))
        .collect()
}

const LAST_1_DAILY_3: [(&str, &str); 2] = [
    ("SNAPKEEP_RETAIN_LAST", "1"),
    ("SNAPKEEP_RETAIN_DAILY", "3"),
];

#[test]
fn prune_dry_run_says_which_rule_keeps_each_snapshot_and_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let ids = five_days(data.path());
    let before = tree(data.path());

    let run = cli(data.path(), &LAST_1_DAILY_3, &["prune", "--dry-run"]);

    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.lines(),
        [
            format!("s {} keep (kept by newest, last, daily)", ids[0]),
            format!("s {} would remove (no rule keeps it)", ids[1]),
            format!("s {} keep (kept by daily)", ids[2]),
            format!("s {} keep (kept by daily)", ids[3]),
            format!("s {} would remove (no rule keeps it)", ids[4]),
            format!("s {} would remove (no rule keeps it)", ids[5]),
            "3 kept, 3 would remove".to_owned(),
        ]
    );
    assert_eq!(tree(data.path()), before);
}

#[test]
fn prune_removes_exactly_the_snapshots_it_reports_removed() {
    let data = tempfile::tempdir().unwrap();
    let ids = five_days(data.path());
    let other = seed(data.path(), "t", datetime!(2026-11-01 10:00 UTC), "{}");

    let run = cli(data.path(), &LAST_1_DAILY_3, &["prune"]);

    assert_eq!(run.code, Some(0), "{run:?}");
    let lines = run.lines();
    let removed: Vec<&String> = lines.iter().filter(|l| l.contains(" removed ")).collect();
    assert_eq!(
        removed,
        [
            &format!("s {} removed (no rule keeps it)", ids[1]),
            &format!("s {} removed (no rule keeps it)", ids[4]),
            &format!("s {} removed (no rule keeps it)", ids[5]),
        ]
    );
    assert!(
        lines.contains(&format!("t {other} keep (kept by newest, last, daily)")),
        "{run:?}"
    );
    assert_eq!(lines.last().unwrap(), "4 kept, 3 removed");
    let mut kept = vec![
        format!("{}.json", ids[3]),
        format!("{}.json", ids[2]),
        format!("{}.json", ids[0]),
    ];
    kept.sort();
    assert_eq!(snapshot_files(data.path(), "s"), kept);
    assert_eq!(snapshot_files(data.path(), "t"), [format!("{other}.json")]);
}

#[test]
fn prune_json_gives_each_decision_with_the_rules_that_keep_it() {
    let data = tempfile::tempdir().unwrap();
    let ids = five_days(data.path());

    let dry = cli(
        data.path(),
        &LAST_1_DAILY_3,
        &["prune", "--dry-run", "--json"],
    );
    let real = cli(data.path(), &LAST_1_DAILY_3, &["prune", "--json"]);

    let decision = |id: &str, kept_by: &[&str]| json!({"session": "s", "id": id, "keep": !kept_by.is_empty(), "keptBy": kept_by});
    let decisions = json!([
        decision(&ids[0], &["newest", "last", "daily"]),
        decision(&ids[1], &[]),
        decision(&ids[2], &["daily"]),
        decision(&ids[3], &["daily"]),
        decision(&ids[4], &[]),
        decision(&ids[5], &[]),
    ]);
    assert_eq!(dry.code, Some(0), "{dry:?}");
    assert_eq!(dry.json(), json!({"dryRun": true, "decisions": decisions}));
    assert_eq!(real.code, Some(0), "{real:?}");
    assert_eq!(
        real.json(),
        json!({"dryRun": false, "decisions": decisions})
    );
    assert_eq!(snapshot_files(data.path(), "s").len(), 3);
}

#[test]
fn prune_names_the_weekly_and_within_rules_too() {
    let data = tempfile::tempdir().unwrap();
    let ids = five_days(data.path());
    // 2026-11-16 is a Monday: the snapshot of the Sunday before is the newest of its ISO week.
    let sunday = seed(data.path(), "s", datetime!(2026-11-15 10:00 UTC), "{}");
    let vars = [
        ("SNAPKEEP_RETAIN_LAST", "1"),
        ("SNAPKEEP_RETAIN_WEEKLY", "2"),
        ("SNAPKEEP_RETAIN_WITHIN", "33h"),
    ];

    let run = cli(data.path(), &vars, &["prune", "--dry-run", "--json"]);

    assert_eq!(run.code, Some(0), "{run:?}");
    let decision = |id: &str, kept_by: &[&str]| json!({"session": "s", "id": id, "keep": !kept_by.is_empty(), "keptBy": kept_by});
    assert_eq!(
        run.json()["decisions"],
        json!([
            decision(&ids[0], &["newest", "last", "weekly", "within"]),
            decision(&ids[1], &["within"]),
            decision(&ids[2], &["within"]),
            decision(&ids[3], &[]),
            decision(&ids[4], &[]),
            decision(&ids[5], &[]),
            decision(&sunday, &["weekly"]),
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// restore

#[test]
fn restore_saves_an_old_snapshot_as_a_new_latest_that_show_prints() {
    let seeded = seeded();
    let data = seeded.data.path();

    let run = cli(data, &[], &["restore", "s", &seeded.s[0]]);

    assert_eq!(run.code, Some(0), "{run:?}");
    let files = snapshot_files(data, "s");
    assert_eq!(files.len(), 4, "{files:?}");
    let newest = files.last().unwrap().strip_suffix(".json").unwrap();
    assert!(newest > seeded.s[2].as_str(), "{newest}");
    assert_eq!(
        run.lines(),
        [format!(
            "restored {} as {newest} (the latest of s)",
            seeded.s[0]
        )]
    );
    assert_eq!(cli(data, &[], &["show", "s"]).stdout, r#"{"v":1}"#);
    assert_eq!(cli(data, &[], &["verify"]).code, Some(0));
}

#[test]
fn restore_accepts_the_snapshots_file_name() {
    let seeded = seeded();
    let file_name = format!("{}.json", seeded.s[1]);

    let run = cli(seeded.data.path(), &[], &["restore", "s", &file_name]);

    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        cli(seeded.data.path(), &[], &["show", "s"]).stdout,
        r#"{"v":22}"#
    );
}

#[test]
fn restore_json_says_what_was_restored_as_which_id_and_what_was_pruned() {
    let seeded = seeded();
    let vars = [("SNAPKEEP_RETAIN_LAST", "3")];

    let run = cli(
        seeded.data.path(),
        &vars,
        &["restore", "s", &seeded.s[1], "--json"],
    );

    assert_eq!(run.code, Some(0), "{run:?}");
    let answer = run.json();
    let id = answer["id"].as_str().unwrap().to_owned();
    assert_eq!(
        answer,
        json!({
            "session": "s",
            "restored": seeded.s[1],
            "id": id,
            "deduplicated": false,
            "pruned": [seeded.s[0]],
        })
    );
    let mut expected = vec![
        format!("{}.json", seeded.s[1]),
        format!("{}.json", seeded.s[2]),
        format!("{id}.json"),
    ];
    expected.sort();
    assert_eq!(snapshot_files(seeded.data.path(), "s"), expected);
}

#[test]
fn restoring_the_latest_is_deduplicated_and_writes_nothing() {
    let seeded = seeded();
    let before = tree(seeded.data.path());

    let text = cli(seeded.data.path(), &[], &["restore", "s", &seeded.s[2]]);
    let json = cli(
        seeded.data.path(),
        &[],
        &["restore", "s", &seeded.s[2], "--json"],
    );

    assert_eq!(text.code, Some(0), "{text:?}");
    assert_eq!(
        text.lines(),
        [format!(
            "{} is already the latest snapshot of s",
            seeded.s[2]
        )]
    );
    assert_eq!(json.code, Some(0), "{json:?}");
    assert_eq!(json.json()["deduplicated"], true);
    assert_eq!(json.json()["id"], seeded.s[2].as_str());
    assert_eq!(json.json()["pruned"], json!([]));
    // Same files, same bytes, same times: a deduplicated save marks the session as in use, for
    // the idle-session sweep, on its directory and not on any snapshot.
    let after = tree(seeded.data.path());
    assert_eq!(after, before);
    let session_dir = std::fs::metadata(seeded.data.path().join("s")).unwrap();
    let marked = session_dir.modified().unwrap();
    assert!(
        SystemTime::now().duration_since(marked).unwrap() < Duration::from_secs(60),
        "the session was not marked as used"
    );
}

#[test]
fn restore_of_an_unknown_snapshot_exits_2_with_one_line_and_writes_nothing() {
    let seeded = seeded();
    let unknown = seed(
        tempfile::tempdir().unwrap().path(),
        "x",
        datetime!(2026-11-19 11:00 UTC),
        "{}",
    );
    let before = tree(seeded.data.path());

    let run = cli(seeded.data.path(), &[], &["restore", "s", &unknown]);

    assert_one_error_line(&run, &format!("cannot restore {unknown} of session s"));
    assert_eq!(tree(seeded.data.path()), before);
}

#[test]
fn restore_of_a_corrupt_snapshot_is_refused_without_force() {
    let seeded = seeded();
    let path = seeded.data.path().join(format!("s/{}.json", seeded.s[0]));
    std::fs::write(path, "tampered").unwrap();
    let before = tree(seeded.data.path());

    let run = cli(seeded.data.path(), &[], &["restore", "s", &seeded.s[0]]);

    assert_one_error_line(&run, "does not match its digest");
    assert!(run.stderr.contains("--force"), "{run:?}");
    assert_eq!(tree(seeded.data.path()), before, "nothing written");
}

#[test]
fn restore_of_a_corrupt_snapshot_with_force_restores_it_and_warns() {
    let seeded = seeded();
    let path = seeded.data.path().join(format!("s/{}.json", seeded.s[0]));
    std::fs::write(path, "\"tampered\"").unwrap();

    let run = cli(
        seeded.data.path(),
        &[],
        &["restore", "s", &seeded.s[0], "--force"],
    );

    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("does not match its digest"), "{run:?}");
    let show = cli(seeded.data.path(), &[], &["show", "s"]);
    assert_eq!(show.stdout, "\"tampered\"");
}

#[test]
fn restore_counts_the_whole_directory_against_the_total_quota() {
    let seeded = seeded();
    let total: u64 = walk_bytes(seeded.data.path());
    let limit = total.to_string();

    let run = cli(
        seeded.data.path(),
        &[
            ("SNAPKEEP_MAX_TOTAL_BYTES", &limit),
            ("SNAPKEEP_RETAIN_LAST", "100"),
        ],
        &["restore", "s", &seeded.s[0]],
    );

    assert_one_error_line(&run, "SNAPKEEP_MAX_TOTAL_BYTES");
}

#[test]
fn verify_of_a_missing_data_dir_exits_2() {
    let missing = tempfile::tempdir().unwrap().path().join("nothing-here");

    let run = cli(&missing, &[], &["verify"]);

    assert_eq!(run.code, Some(2), "{run:?}");
}

/// Bytes of every snapshot file under `dir`.
fn walk_bytes(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn restore_of_an_invalid_session_exits_2_with_one_line_on_stderr() {
    let seeded = seeded();

    let run = cli(
        seeded.data.path(),
        &[],
        &["restore", ".hidden", &seeded.s[0]],
    );

    assert_one_error_line(&run, "invalid session \".hidden\"");
}

#[test]
fn a_bad_retention_setting_exits_2_before_prune_touches_anything() {
    let seeded = seeded();
    let before = tree(seeded.data.path());

    let run = cli(
        seeded.data.path(),
        &[("SNAPKEEP_RETAIN_LAST", "0")],
        &["prune"],
    );

    assert_one_error_line(&run, "SNAPKEEP_RETAIN_LAST");
    assert_eq!(tree(seeded.data.path()), before);
}

// ---------------------------------------------------------------------------------------------
// next to a live server

async fn post(client: &reqwest::Client, server: &Server, session: &str, body: &str) -> String {
    let response = client
        .post(server.url(&format!("{BASE}/{session}")))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.unwrap();
    answer["id"].as_str().unwrap().to_owned()
}

/// Runs the CLI off the async threads.
async fn cli_async(data: &Path, vars: &[(&'static str, &'static str)], args: &[&str]) -> Run {
    let data = data.to_path_buf();
    let vars = vars.to_vec();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&data, &vars, &args)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn restore_and_prune_from_the_cli_are_served_by_a_live_server_on_the_same_data_dir() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let client = reqwest::Client::new();
    let first = post(&client, &server, "s", r#"{"v":1}"#).await;
    post(&client, &server, "s", r#"{"v":2}"#).await;
    let third = post(&client, &server, "s", r#"{"v":3}"#).await;

    let restored = cli_async(data.path(), &[], &["restore", "s", &first, "--json"]).await;
    let pruned = cli_async(
        data.path(),
        &[("SNAPKEEP_RETAIN_LAST", "2")],
        &["prune", "--json"],
    )
    .await;

    assert_eq!(restored.code, Some(0), "{restored:?}");
    let new_id = restored.json()["id"].as_str().unwrap().to_owned();
    assert!(new_id > third, "{new_id} after {third}");
    assert_eq!(pruned.code, Some(0), "{pruned:?}");
    let removed: Vec<String> = pruned.json()["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == false)
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(removed.len(), 2, "{pruned:?}");
    assert!(removed.contains(&first), "{pruned:?}");

    let latest = client
        .get(server.url(&format!("{BASE}/s/latest")))
        .send()
        .await
        .unwrap();
    assert_eq!(latest.status(), 200);
    assert_eq!(latest.text().await.unwrap(), r#"{"v":1}"#);
    let listed = listed_ids(&client, &server.url(&format!("{BASE}/s"))).await;
    assert_eq!(listed, [new_id, third]);
    let verify = cli_async(data.path(), &[], &["verify"]).await;
    assert_eq!(verify.code, Some(0), "{verify:?}");
    assert_eq!(
        verify.lines(),
        ["2 snapshots intact, 0 corrupt, 0 temp, 0 stray"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_next_to_a_server_that_keeps_writing_and_pruning_finds_nothing_wrong() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[("SNAPKEEP_RETAIN_LAST", "1")]);
    let client = reqwest::Client::new();
    for session in ["a", "b", "c"] {
        post(&client, &server, session, "0").await;
    }
    let writing = {
        let (client, url) = (client.clone(), server.url(BASE));
        tokio::spawn(async move {
            for n in 1usize.. {
                let session = ["a", "b", "c"][n % 3];
                let response = client
                    .post(format!("{url}/{session}"))
                    .header("content-type", "application/json")
                    .body(n.to_string())
                    .send()
                    .await;
                if response.is_err() {
                    return;
                }
            }
        })
    };

    let mut failures = Vec::new();
    for _ in 0..200 {
        let run = cli_async(data.path(), &[], &["verify"]).await;
        if run.code != Some(0) {
            failures.push(run);
        }
    }
    writing.abort();

    assert!(failures.is_empty(), "{failures:#?}");
}

/// The subcommands on a bucket (`--storage s3://...`, the `AWS_*` variables), next to a server
/// writing to it: what they list, show, verify, prune and restore is the server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_works_on_a_bucket() {
    let Some(moto) = support::s3::moto() else {
        return;
    };
    let prefix = uuid::Uuid::new_v4().to_string();
    let storage = format!("s3://{}/{prefix}", support::s3::BUCKET);
    let aws: Vec<(String, String)> = moto
        .vars(&prefix)
        .into_iter()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .collect();
    let on_bucket = |args: &[&str]| {
        let output = snapkeep(&[("SNAPKEEP_RETAIN_LAST", "2")])
            .envs(aws.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("--storage")
            .arg(&storage)
            .args(args)
            .output()
            .unwrap();
        Run {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    };
    let scratch = tempfile::tempdir().unwrap();
    let mut vars: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    vars.extend([
        ("SNAPKEEP_STORAGE", storage.as_str()),
        ("SNAPKEEP_RETAIN_LAST", "3"),
    ]);
    let server = Server::start(scratch.path(), &vars);
    server.wait_prepared();
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 1..=3 {
        let answer: Value = client
            .post(server.url(&format!("{BASE}/s")))
            .header("content-type", "application/json")
            .body(format!("{{\"v\":{n}}}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }

    let sessions = on_bucket(&["--json", "list"]).json();
    assert_eq!(sessions[0]["session"], "s");
    assert_eq!(sessions[0]["snapshots"], 3);
    assert_eq!(on_bucket(&["show", "s"]).stdout, "{\"v\":3}");
    let verified = on_bucket(&["--json", "verify"]);
    assert_eq!(verified.code, Some(0), "{verified:?}");
    assert_eq!(verified.json()["intact"], 3);

    // The CLI's policy keeps 2: the oldest goes, and the server sees it gone.
    let pruned = on_bucket(&["prune"]);
    assert_eq!(pruned.code, Some(0), "{pruned:?}");
    let url = server.url(&format!("{BASE}/s"));
    assert_eq!(
        listed_ids(&client, &url).await,
        [ids[2].clone(), ids[1].clone()]
    );
    let restored = on_bucket(&["--json", "restore", "s", &ids[1]]);
    assert_eq!(restored.code, Some(0), "{restored:?}");
    let new = restored.json()["id"].as_str().unwrap().to_owned();
    let latest = client
        .get(server.url(&format!("{BASE}/s/latest")))
        .send()
        .await
        .unwrap();
    assert_eq!(latest.headers()["x-snapshot-id"], new.as_str());
    assert_eq!(latest.text().await.unwrap(), "{\"v\":2}");

    // Damage by hand: an edited snapshot, a deleted one, a stranger's object.
    moto.put(&format!("{prefix}/s/{new}.json"), b"{\"v\":666}")
        .await;
    moto.delete(&format!("{prefix}/s/{}.json", ids[2])).await;
    moto.put(&format!("{prefix}/notes.txt"), b"operator's")
        .await;
    let verified = on_bucket(&["--json", "verify"]);
    assert_eq!(verified.code, Some(1), "{verified:?}");
    let report = verified.json();
    assert_eq!(report["corrupt"], json!([format!("s/{new}.json")]));
    assert_eq!(report["missing"], json!([format!("s/{}.json", ids[2])]));
    assert_eq!(report["stray"], json!(["notes.txt"]));
}
