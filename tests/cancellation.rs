//! The first fatal error cancels every component: the run returns the error with the
//! component's name and the row, the sources are dropped, no task or thread of the run is left,
//! and the sink leaves no manifest and no shard behind. (One test per process: it inspects the
//! process's threads.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{ArrayRef, Int32Array, StringArray};
use arrow::record_batch::RecordBatch;
use common::*;
use futures::StreamExt;
use tripline::{Batch, BatchStream, Pipeline, RunOptions};

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// An endless source whose batch 5 holds a row with an empty text.
fn source_with_bad_row(dropped: Arc<AtomicBool>) -> BatchStream {
    let guard = DropFlag(dropped);
    futures::stream::unfold((0i64, guard), |(i, guard)| async move {
        let mut b = docs_batch(i * 10, 10);
        if i == 5 {
            let texts: Vec<&str> = (0..10).map(|r| if r == 3 { "" } else { "fine" }).collect();
            b = RecordBatch::try_new(
                b.schema(),
                vec![
                    b.column(0).clone(),
                    Arc::new(Int32Array::from(vec![1; 10])) as ArrayRef,
                    Arc::new(StringArray::from(texts)),
                ],
            )
            .unwrap();
        }
        Some((
            Ok(Batch::new(
                b,
                i as u64,
                Arc::from("generated"),
                (i * 10) as u64,
            )),
            (i + 1, guard),
        ))
    })
    .boxed()
}

fn tripline_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .filter(|n| n.starts_with("tripline-") && n != "tripline-rt")
        .collect()
}

#[test]
fn first_error_cancels_everything_and_commits_nothing() {
    let d = tmp();
    write_docs(&d.path().join("docs.parquet"), 0, 10, 10);
    let out = d.path().join("out");
    let yaml = format!(
        "version: 1\nsources:\n  docs: {{type: parquet, path: {}}}\nstages:\n  clean: {{type: clean, inputs: [docs], text_columns: [text]}}\nsinks:\n  shards: {{type: parquet_shards, inputs: [clean], path: {}, rows_per_shard: 15}}\n",
        d.path().join("docs.parquet").display(),
        out.display()
    );
    let pipeline = Pipeline::from_yaml(&yaml, &[]).unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(async {
            let mut opts = RunOptions {
                workers: Some(2),
                ..Default::default()
            };
            opts.sources
                .insert("docs".into(), source_with_bad_row(dropped.clone()));
            pipeline.run(opts).await
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "component `clean`: row 53 of generated: column `text` is empty, expected at least 1"
    );
    assert_eq!(err.exit_code(), 1);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the source stream was not dropped"
    );
    // Every component's future holds either the source stream (whose drop is flagged) or the
    // shared worker pool, whose threads are joined when the last holder drops: no
    // `tripline-*` thread left means every task of the run has been dropped.
    assert_eq!(
        tripline_threads(),
        Vec::<String>::new(),
        "threads of the run are still alive"
    );
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    // Shards completed before the failure may remain, but never a manifest or a temporary file.
    assert!(
        !left
            .iter()
            .any(|n| n == "manifest.json" || n.ends_with(".tmp")),
        "{left:?}"
    );
}
