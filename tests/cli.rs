//! The `tripline` binary: exit codes (0 ok, 1 runtime failure, 2 invalid config or usage,
//! 130 interrupted), `--set` overrides, `--metrics-json`, `inspect` verification, and crash
//! safety: Ctrl-C drains to a manifest marked incomplete; kill -9 leaves no manifest that
//! points at a partial shard.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn tripline(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env("TRIPLINE_LOG", "warn")
        .output()
        .unwrap()
}

fn write_pipeline(dir: &Path, input: &Path, out: &Path, extra_sink: &str) -> std::path::PathBuf {
    let file = dir.join("pipeline.yaml");
    std::fs::write(&file, passthrough_yaml(input, out, extra_sink)).unwrap();
    file
}

#[test]
fn validate_reports_every_problem_and_exits_2() {
    let d = tmp();
    let file = d.path().join("bad.yaml");
    std::fs::write(
        &file,
        "version: 1\nsources:\n  docs: {type: parquet, path: nope.parquet, colums: [id]}\n",
    )
    .unwrap();
    let o = tripline(&["validate", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.yaml:3:45: source `docs`: unknown field `colums`"),
        "{err}"
    );
    assert!(err.contains("did you mean `columns`?"), "{err}");
    assert!(
        err.contains("bad.yaml:1:1: the pipeline has no sink"),
        "{err}"
    );
    let o = tripline(&[
        "validate",
        "pipelines/passthrough.yaml",
        "pipelines/clean.yaml",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = tripline(&["run", "--no-such-flag", "x.yaml"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn run_applies_overrides_writes_metrics_and_inspect_verifies() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 2000, 500);
    let file = write_pipeline(
        d.path(),
        Path::new("nowhere.parquet"),
        Path::new("out/never"),
        "    rows_per_shard: 100000\n",
    );
    let out = d.path().join("elsewhere");
    let metrics = d.path().join("metrics.json");
    let o = tripline(&[
        "run",
        file.to_str().unwrap(),
        "--set",
        &format!("sinks.shards.path={}", out.display()),
        "--set",
        &format!("sources.docs.path={}", input.display()),
        "--set",
        "sinks.shards.rows_per_shard=600",
        "--metrics-json",
        metrics.to_str().unwrap(),
        "--progress",
        "off",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    assert_eq!(m["interrupted"], false);
    let comps = m["components"].as_array().unwrap();
    assert_eq!(comps[0]["name"], "docs");
    assert_eq!(comps[0]["rows_out"], 2000);
    assert_eq!(comps[1]["name"], "shards");
    assert_eq!(comps[1]["rows_out"], 2000);
    assert_eq!(comps[1]["details"]["shards"], 4);

    let o = tripline(&["inspect", out.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{report}");
    assert!(report.contains("rows: 2000  shards: 4"), "{report}");
    assert!(
        report.contains("verified: every shard matches the manifest"),
        "{report}"
    );

    // Tamper with one shard: inspect names it and fails.
    let shard = out.join("part-00002.parquet");
    let mut bytes = std::fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&shard, bytes).unwrap();
    let o = tripline(&["inspect", out.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{report}");
    assert!(
        report.contains("part-00002.parquet: sha256 is "),
        "{report}"
    );

    // Runtime failure (the output directory is not empty): exit 1.
    let o = tripline(&[
        "run",
        file.to_str().unwrap(),
        "--set",
        &format!("sinks.shards.path={}", out.display()),
        "--set",
        &format!("sources.docs.path={}", input.display()),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not empty; pass --overwrite"));
}

/// Starts a long run and returns once its first shard is complete (read from its log).
fn start_long_run(dir: &Path) -> (std::process::Child, std::path::PathBuf) {
    let input = dir.join("big.parquet");
    let batches: Vec<_> = (0..40).map(|i| docs_batch(i * 10_000, 10_000)).collect();
    write_parquet(&input, &batches, 10_000);
    let out = dir.join("out");
    let file = write_pipeline(
        dir,
        &input,
        &out,
        "    rows_per_shard: 10000\n    row_group_rows: 10000\n    compression_level: 9\n",
    );
    let mut child = Command::new(bin())
        .args(["run", file.to_str().unwrap(), "--progress", "off"])
        .env("TRIPLINE_LOG", "tripline=debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines
            .next()
            .expect("the run ended before its first shard")
            .unwrap();
        if line.contains("shard complete") {
            break;
        }
    }
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, out)
}

#[test]
fn ctrl_c_drains_commits_an_incomplete_manifest_and_exits_130() {
    let d = tmp();
    let (child, out) = start_long_run(d.path());
    // SAFETY: sending a signal to our own child process.
    unsafe { libc_kill(child.id() as i32, 2) };
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(130));
    let (_, m) = tripline::sinks::manifest::read(&out).unwrap();
    assert!(!m.complete);
    assert!(m.rows >= 10_000 && m.rows < 400_000, "{}", m.rows);
    // The shards hold exactly a prefix of the input, and every one verifies.
    assert_eq!(
        ids(&read_output(&out)),
        (0..m.rows as i64).collect::<Vec<_>>()
    );
    let o = tripline(&["inspect", out.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(1),
        "an interrupted output is reported as incomplete: {report}"
    );
    assert!(report.contains("the run was interrupted"), "{report}");
    assert!(
        report.contains("verified: every shard matches the manifest"),
        "{report}"
    );
}

#[test]
fn kill_9_leaves_no_manifest_pointing_at_a_partial_shard() {
    let d = tmp();
    let (mut child, out) = start_long_run(d.path());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let o = tripline(&["inspect", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!out.join("manifest.json").exists());
    assert!(String::from_utf8_lossy(&o.stderr).contains("manifest.json"));
    // Every file that looks like a finished shard is one; unfinished ones are hidden temporaries.
    let mut complete = 0;
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        if name.starts_with("part-") {
            let rows = read_parquet(&out.join(&name))
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>();
            assert_eq!(rows, 10_000, "{name}");
            complete += 1;
        } else {
            assert!(
                name.starts_with('.') && name.ends_with(".tmp"),
                "unexpected file {name}"
            );
        }
    }
    assert!(complete >= 1);
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
