//! Source → sink round trips through the public API: every row and value survives, shards roll
//! where configured, fan-out feeds two sinks, and shard selection splits input exactly.

mod common;

use common::*;
use tripline::{Pipeline, RunOptions};

#[test]
fn passthrough_keeps_every_row_and_value() {
    let d = tmp();
    let input = d.path().join("in/docs.parquet");
    write_docs(&input, 0, 2500, 700);
    let out = d.path().join("out");
    let yaml = passthrough_yaml(&input, &out, "    rows_per_shard: 1000\n");
    let p = Pipeline::from_yaml(&yaml, &[]).unwrap();
    let summary = p.run_blocking(RunOptions::default()).unwrap();
    assert!(!summary.interrupted);

    let got = read_output(&out);
    let want = read_parquet(&input);
    let concat = |b: &[arrow::record_batch::RecordBatch]| {
        arrow::compute::concat_batches(&b[0].schema(), b).unwrap()
    };
    assert_eq!(concat(&got), concat(&want));

    let (_, m) = tripline::sinks::manifest::read(&out).unwrap();
    assert_eq!(m.rows, 2500);
    assert_eq!(
        m.shards.iter().map(|s| s.rows).collect::<Vec<_>>(),
        vec![1000, 1000, 500]
    );
    assert_eq!(m.shards[1].file, "part-00001.parquet");
    assert!(m.complete);
    let names: Vec<&str> = m.schema.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["id", "label", "text"]);
    let inspection = tripline::inspect::inspect(&out).unwrap();
    assert!(inspection.ok(), "{}", inspection.report);
}
