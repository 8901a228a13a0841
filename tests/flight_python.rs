//! The Python side of the Flight sink, end to end: `tripline serve` runs a pipeline that tees
//! its output to Parquet shards and to a Flight server; two `examples/torch_consumer.py`
//! processes consume two epochs as ranks 0 and 1 of 2 (rank 0 drops its stream once and
//! resumes). Their batches must be disjoint and their union exactly the rows of the shards, in
//! every epoch. `tests/python/flight_errors.py` checks what pyarrow sees for bad tickets.
//!
//! Needs the project venv with pyarrow: `scripts/setup-python.sh`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    venv_python("pyarrow.flight, numpy")
}

/// Kills the server if the test fails before it exits.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tripline serve` and returns it with the address it listens on (read from its log).
fn serve(yaml: &Path) -> (Server, String, mpsc::Receiver<String>) {
    let mut child = Command::new(bin())
        .args(["serve", yaml.to_str().unwrap(), "--overwrite"])
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let server = Server(child);
    let mut log = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the server did not start; log:\n{}", log.join("\n")));
        if let Some(rest) = line.split("serving on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().to_string();
            return (server, addr, rx);
        }
        log.push(line);
    }
}

fn consumer(py: &Path, addr: &str, rank: u32, out: &Path, extra: &[&str]) -> Child {
    Command::new(py)
        .arg(repo().join("examples/torch_consumer.py"))
        .args(["--address", addr, "--rank", &rank.to_string()])
        .args(["--world-size", "2", "--epochs", "2", "--out"])
        .arg(out)
        .args(extra)
        .spawn()
        .unwrap()
}

#[test]
fn python_ranks_receive_disjoint_batches_whose_union_is_the_shards() {
    let py = python();
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 7000, 1000);
    let record = d.path().join("record");
    let yaml = d.path().join("serve.yaml");
    std::fs::write(
        &yaml,
        format!(
            "version: 1\nseed: 3\nsources:\n  docs:\n    type: parquet\n    path: {}\n    batch_rows: 1000\nsinks:\n  record:\n    type: parquet_shards\n    inputs: [docs]\n    path: {}\n  trainer:\n    type: flight\n    inputs: [docs]\n    address: 127.0.0.1:0\n    batch_size: 256\n    epochs: 2\n    replay_buffer: 1000\n    spool_dir: {}\n",
            input.display(),
            record.display(),
            d.path().join("spool").display()
        ),
    )
    .unwrap();
    let (mut server, addr, log) = serve(&yaml);

    let errors = Command::new(&py)
        .arg(repo().join("tests/python/flight_errors.py"))
        .args([&addr, "2"])
        .output()
        .unwrap();
    assert!(
        errors.status.success(),
        "flight_errors.py failed:\n{}{}",
        String::from_utf8_lossy(&errors.stdout),
        String::from_utf8_lossy(&errors.stderr)
    );

    let outs = [d.path().join("rank0.json"), d.path().join("rank1.json")];
    let mut c0 = consumer(&py, &addr, 0, &outs[0], &["--disconnect-after", "3"]);
    // Rank 1 reads through the prefetching thread.
    let mut c1 = consumer(&py, &addr, 1, &outs[1], &["--prefetch", "2"]);
    assert!(c0.wait().unwrap().success(), "rank 0 consumer failed");
    assert!(c1.wait().unwrap().success(), "rank 1 consumer failed");
    // The server exits by itself once both ranks have consumed both epochs.
    let status = server.0.wait().unwrap();
    let rest: Vec<String> = log.try_iter().collect();
    assert!(status.success(), "serve failed:\n{}", rest.join("\n"));

    let mut want = ids(&read_output(&record));
    want.sort();
    assert_eq!(want, (0..7000).collect::<Vec<_>>());
    let reports: Vec<Value> = outs
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    // Rank 0 dropped its stream once in epoch 0 and resumed.
    assert_eq!(reports[0]["reconnects"], serde_json::json!([1, 0]));
    assert_eq!(reports[1]["reconnects"], serde_json::json!([0, 0]));
    for epoch in 0..2u64 {
        let mut union = Vec::new();
        for (rank, r) in reports.iter().enumerate() {
            assert_eq!(r["ends"][epoch as usize], "epoch");
            for b in r["batches"].as_array().unwrap() {
                if b["epoch"] != epoch {
                    continue;
                }
                assert_eq!(b["seq"].as_u64().unwrap() % 2, rank as u64);
                union.extend(
                    b["ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_i64().unwrap()),
                );
            }
        }
        let n = union.len();
        union.sort();
        assert_eq!(n, 7000, "epoch {epoch}: no row twice");
        assert_eq!(
            union, want,
            "epoch {epoch}: the union is the recorded output"
        );
    }
}

#[test]
fn consumer_prefetcher_keeps_order_bounds_read_ahead_and_raises_errors() {
    let o = Command::new(python())
        .arg(repo().join("tests/python/prefetch.py"))
        .output()
        .unwrap();
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("prefetch ok"),
        "prefetch.py failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
