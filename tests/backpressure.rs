//! Backpressure with exact arithmetic, as in Vector's topology backpressure tests: a counting
//! source feeds a sink that stops reading after `k` batches. Because every component reserves
//! room downstream before it pulls from upstream, the batches produced but not consumed are
//! exactly those held by the buffers between source and sink: the channels (their configured
//! capacities) and a function stage's in-flight window. A function stage with `workers: w`
//! keeps up to 2w batches on the pool while it is polled; once it has handed a result
//! downstream and waits for room, it holds 2w − 1 (the slot it just emptied is refilled at the
//! next poll). The source checks the
//! bound itself on every batch it yields, so an overrun is caught whenever it happens, and the
//! test waits until the buffers are full to show the bound is reached, not just respected.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use tripline::runtime::CustomSink;
use tripline::{Batch, BatchStream, Pipeline, RunOptions, Shutdown};

struct Counts {
    produced: AtomicU64,
    consumed: AtomicU64,
    overrun: AtomicBool,
}

/// An endless source of one-row batches that checks `produced - consumed <= bound` each time.
fn counting_source(counts: Arc<Counts>, bound: u64, progress: mpsc::Sender<u64>) -> BatchStream {
    futures::stream::unfold(0i64, move |i| {
        let counts = counts.clone();
        let progress = progress.clone();
        async move {
            let produced = counts.produced.fetch_add(1, Ordering::SeqCst) + 1;
            if produced - counts.consumed.load(Ordering::SeqCst) > bound {
                counts.overrun.store(true, Ordering::SeqCst);
            }
            let _ = progress.send(produced);
            Some((
                Ok(Batch::new(
                    docs_batch(i, 1),
                    i as u64,
                    Arc::from("counting"),
                    i as u64,
                )),
                i + 1,
            ))
        }
    })
    .boxed()
}

/// A sink that consumes `k` batches, then stops reading (keeping its input open).
fn stalled_sink(counts: Arc<Counts>, k: u64) -> CustomSink {
    Box::new(move |mut input: BatchStream| {
        Box::pin(async move {
            for _ in 0..k {
                input.next().await.expect("more input")?;
                counts.consumed.fetch_add(1, Ordering::SeqCst);
            }
            futures::future::pending::<()>().await;
            Ok(())
        })
    })
}

/// A sink that consumes everything.
fn draining_sink() -> CustomSink {
    Box::new(move |mut input: BatchStream| {
        Box::pin(async move {
            while let Some(b) = input.next().await {
                b?;
            }
            Ok(())
        })
    })
}

/// Runs `yaml` with `sources.docs` replaced by the counting source and the named sinks
/// replaced; waits until `produced == k + buffered`, then stops the run and checks no overrun.
fn check(yaml: &str, stalled: &str, others: &[&str], k: u64, buffered: u64) {
    let counts = Arc::new(Counts {
        produced: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        overrun: AtomicBool::new(false),
    });
    let (progress_tx, progress_rx) = mpsc::channel();
    let pipeline = Pipeline::from_yaml(yaml, &[]).unwrap();
    let (shutdown, signal) = Shutdown::new();
    let mut opts = RunOptions {
        workers: Some(2),
        shutdown: Some(signal),
        ..Default::default()
    };
    opts.sources.insert(
        "docs".into(),
        counting_source(counts.clone(), k + buffered, progress_tx),
    );
    opts.sinks
        .insert(stalled.into(), stalled_sink(counts.clone(), k));
    for o in others {
        opts.sinks.insert(o.to_string(), draining_sink());
    }
    let run = std::thread::spawn(move || pipeline.run_blocking(opts));
    // Wait (bounded) for the buffers to fill; a generous limit only turns a hang into a failure.
    let mut produced = 0;
    while produced < k + buffered {
        produced = progress_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "stuck at {produced} batches produced, expected {}",
                    k + buffered
                )
            });
    }
    shutdown.abort();
    let result = run.join().unwrap();
    assert!(
        matches!(result, Err(tripline::Error::Interrupted)),
        "{result:?}"
    );
    assert_eq!(counts.consumed.load(Ordering::SeqCst), k);
    assert!(
        !counts.overrun.load(Ordering::SeqCst),
        "more than consumed + {buffered} batches were produced at some point"
    );
    assert!(counts.produced.load(Ordering::SeqCst) <= k + buffered);
}

fn fixture() -> tempfile::TempDir {
    let d = tmp();
    write_docs(&d.path().join("docs.parquet"), 0, 10, 10);
    d
}

#[test]
fn source_to_sink_holds_exactly_the_channel_capacity() {
    let d = fixture();
    for cap in [1u64, 3, 8] {
        let yaml = format!(
            "version: 1\nruntime: {{channel_capacity: {cap}}}\nsources:\n  docs: {{type: parquet, path: {}}}\nsinks:\n  out: {{type: parquet_shards, inputs: [docs], path: {}}}\n",
            d.path().join("docs.parquet").display(),
            d.path().join("unused").display()
        );
        check(&yaml, "out", &[], 5, cap);
    }
}

#[test]
fn a_stage_adds_its_window_and_its_own_buffer() {
    let d = fixture();
    // source --(3)--> clean (workers 1: window 2, holds 2 - 1 while waiting) --(buffer 2)--> sink
    let yaml = format!(
        "version: 1\nruntime: {{channel_capacity: 3}}\nsources:\n  docs: {{type: parquet, path: {}}}\nstages:\n  clean: {{type: clean, inputs: [docs], not_null: [id], workers: 1, buffer: 2}}\nsinks:\n  out: {{type: parquet_shards, inputs: [clean], path: {}}}\n",
        d.path().join("docs.parquet").display(),
        d.path().join("unused").display()
    );
    check(&yaml, "out", &[], 4, 3 + (2 - 1) + 2);
}

#[test]
fn fan_out_is_held_back_by_the_slowest_consumer() {
    let d = fixture();
    // One source feeds two sinks; the fast one drains everything, the stalled one holds the
    // source to what its own channel can buffer.
    let yaml = format!(
        "version: 1\nruntime: {{channel_capacity: 4}}\nsources:\n  docs: {{type: parquet, path: {}}}\nsinks:\n  slow: {{type: parquet_shards, inputs: [docs], path: {}}}\n  fast: {{type: parquet_shards, inputs: [docs], path: {}}}\n",
        d.path().join("docs.parquet").display(),
        d.path().join("a").display(),
        d.path().join("b").display()
    );
    check(&yaml, "slow", &["fast"], 6, 4);
}
