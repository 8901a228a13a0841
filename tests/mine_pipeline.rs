//! The `mine` stage through the public pipeline API: labelled and paired modes against naive
//! references, sampler-formed training batches, the report files, and byte-identical output
//! for 1 and N workers.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, FixedSizeListArray, Float32Array, Int32Array, Int64Array, StringArray,
};
use arrow::datatypes::{DataType, Field, Int64Type};
use arrow::record_batch::RecordBatch;
use common::*;
use rand::{RngExt, SeedableRng};
use tripline::{Pipeline, RunOptions};

fn vectors(v: &[Vec<f32>]) -> ArrayRef {
    let d = v[0].len() as i32;
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let flat: Vec<f32> = v.iter().flatten().copied().collect();
    Arc::new(
        FixedSizeListArray::try_new(field, d, Arc::new(Float32Array::from(flat)), None).unwrap(),
    )
}

fn unit(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// `n` records in `classes` clusters, `d` dimensions, normalised.
fn labelled(n: usize, classes: i32, d: usize, seed: u64) -> (RecordBatch, Vec<Vec<f32>>, Vec<i32>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..classes)
        .map(|_| (0..d).map(|_| rng.random::<f32>() - 0.5).collect())
        .collect();
    let labels: Vec<i32> = (0..n).map(|i| (i * 7 % classes as usize) as i32).collect();
    let emb: Vec<Vec<f32>> = labels
        .iter()
        .map(|&l| {
            unit(
                centres[l as usize]
                    .iter()
                    .map(|c| c + 0.6 * (rng.random::<f32>() - 0.5))
                    .collect(),
            )
        })
        .collect();
    let ids: Vec<i64> = (0..n as i64).map(|i| 1000 + i).collect();
    let texts: Vec<String> = (0..n).map(|i| format!("text {i}")).collect();
    let b = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("label", Arc::new(Int32Array::from(labels.clone()))),
        ("text", Arc::new(StringArray::from(texts))),
        ("emb", vectors(&emb)),
    ])
    .unwrap();
    (b, emb, labels)
}

fn run(yaml: &str, workers: usize) {
    let p = Pipeline::from_yaml(yaml, &[]).unwrap();
    p.run_blocking(RunOptions {
        workers: Some(workers),
        ..RunOptions::default()
    })
    .unwrap();
}

fn pipeline(input: &Path, out: &Path, stage: &str) -> String {
    format!(
        "version: 1\nseed: 11\nsources:\n  recs:\n    type: parquet\n    path: {}\n    batch_rows: 128\nstages:\n  mined:\n    type: mine\n    inputs: [recs]\n{stage}sinks:\n  shards:\n    type: parquet_shards\n    inputs: [mined]\n    path: {}\n",
        input.display(),
        out.display()
    )
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

fn col_i64(b: &RecordBatch, name: &str) -> Vec<i64> {
    b.column_by_name(name)
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

#[test]
fn labelled_global_hard_negatives_equal_a_naive_reference_and_are_thread_independent() {
    let d = tmp();
    let input = d.path().join("in/recs.parquet");
    let (batch, emb, labels) = labelled(700, 9, 12, 5);
    write_parquet(&input, &[batch], 200);
    let stage = "    mode: labelled\n    label: label\n    embedding: emb\n    payload: text\n    scope: {type: global}\n    negatives: {strategy: hard, num_negatives: 2, range: [1, 30], relative_margin: 0.05, sampling: top}\n    output: {format: triplet, scores: true, batch_anchors: 100}\n    query_block: 64\n    candidate_block: 100\n";
    let mut outputs = Vec::new();
    for workers in [1, 3] {
        let out = d.path().join(format!("out{workers}"));
        run(&pipeline(&input, &out, stage), workers);
        assert!(out.join("mining_report.json").exists());
        assert!(out.join("report.html").exists());
        let html = std::fs::read_to_string(out.join("report.html")).unwrap();
        assert!(html.contains("<svg"));
        for remote in ["<script", "src=", "href=", "@import"] {
            assert!(
                !html.contains(remote),
                "report.html must be self-contained ({remote})"
            );
        }
        outputs.push(
            arrow::compute::concat_batches(&read_output(&out)[0].schema(), &read_output(&out))
                .unwrap(),
        );
    }
    assert_eq!(outputs[0], outputs[1], "1 vs 3 workers");
    let out = &outputs[0];
    let names: Vec<String> = out
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "anchor_id",
            "positive_id",
            "negative_id",
            "anchor",
            "positive",
            "negative",
            "scores"
        ]
    );
    let (a, p, n) = (
        col_i64(out, "anchor_id"),
        col_i64(out, "positive_id"),
        col_i64(out, "negative_id"),
    );
    // Group negatives by (anchor, positive), in output order.
    let mut by_pair: Vec<((i64, i64), Vec<i64>)> = Vec::new();
    for i in 0..out.num_rows() {
        match by_pair.last_mut() {
            Some((k, v)) if *k == (a[i], p[i]) => v.push(n[i]),
            _ => by_pair.push(((a[i], p[i]), vec![n[i]])),
        }
    }
    assert_eq!(by_pair.len(), 700, "one positive per anchor");
    let idx = |id: i64| (id - 1000) as usize;
    let mut ties = 0;
    for ((ai, pi), negs) in &by_pair {
        let (ai, pi) = (idx(*ai), idx(*pi));
        assert_ne!(ai, pi);
        assert_eq!(labels[ai], labels[pi]);
        let sp = dot(&emb[ai], &emb[pi]);
        let bound = sp - sp.abs() * 0.05;
        let mut cands: Vec<(f64, usize)> = (0..700)
            .filter(|&c| labels[c] != labels[ai])
            .map(|c| (dot(&emb[ai], &emb[c]), c))
            .filter(|&(s, _)| s <= bound)
            .collect();
        cands.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap().then(x.1.cmp(&y.1)));
        let want: Vec<usize> = cands[1..3].iter().map(|c| c.1).collect();
        let got: Vec<usize> = negs.iter().map(|&i| idx(i)).collect();
        if got != want {
            ties += 1;
        }
    }
    assert!(ties <= 3, "{ties} anchors differ from the naive reference");
}

#[test]
fn paired_mode_groups_anchors_and_excludes_every_positive() {
    let d = tmp();
    let input = d.path().join("in/pairs.parquet");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let n = 300;
    // Anchor i / 2 for pairs 2k, 2k+1: each anchor has two positives; positive 17 repeats 3's.
    let anchors: Vec<String> = (0..n).map(|i| format!("q{}", i / 2)).collect();
    let positives: Vec<String> = (0..n)
        .map(|i| {
            if i == 17 {
                "p3".into()
            } else {
                format!("p{i}")
            }
        })
        .collect();
    let qv: Vec<Vec<f32>> = (0..n / 2)
        .map(|_| unit((0..8).map(|_| rng.random::<f32>() - 0.5).collect()))
        .collect();
    let pv_by_text: HashMap<String, Vec<f32>> = positives
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                t.clone(),
                unit(
                    qv[i / 2]
                        .iter()
                        .map(|x| x + 0.8 * (rng.random::<f32>() - 0.5))
                        .collect(),
                ),
            )
        })
        .collect();
    let ae: Vec<Vec<f32>> = (0..n).map(|i| qv[i / 2].clone()).collect();
    let pe: Vec<Vec<f32>> = positives.iter().map(|t| pv_by_text[t].clone()).collect();
    let b = RecordBatch::try_from_iter(vec![
        (
            "anchor",
            Arc::new(StringArray::from(anchors.clone())) as ArrayRef,
        ),
        ("positive", Arc::new(StringArray::from(positives.clone()))),
        ("anchor_embedding", vectors(&ae)),
        ("positive_embedding", vectors(&pe)),
    ])
    .unwrap();
    write_parquet(&input, &[b], 100);
    let out = d.path().join("out");
    let stage = "    mode: paired\n    anchor: anchor\n    positive: positive\n    scope: {type: global}\n    negatives: {strategy: hard, num_negatives: 3, range: [0, 20], relative_margin: 0.05}\n    output: {format: n-tuple}\n";
    run(&pipeline(&input, &out, stage), 2);
    let got = read_output(&out);
    let got = arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
    // Naive reference, sentence-transformers semantics: dedupe positives by text, group anchors
    // by text, reference = smallest positive score, exclude the group's positives.
    let mut corpus: Vec<String> = Vec::new();
    for p in &positives {
        if !corpus.contains(p) {
            corpus.push(p.clone());
        }
    }
    let anchor_col = got.column_by_name("anchor").unwrap().as_string::<i32>();
    let mut checked = 0;
    for r in 0..got.num_rows() {
        let q = anchor_col.value(r);
        let qi: usize = q[1..].parse().unwrap();
        let my_pos: Vec<&String> = (0..n)
            .filter(|&i| anchors[i] == q)
            .map(|i| &positives[i])
            .collect();
        let refscore = my_pos
            .iter()
            .map(|p| dot(&qv[qi], &pv_by_text[*p]))
            .fold(f64::INFINITY, f64::min);
        let bound = refscore - refscore.abs() * 0.05;
        let mut c: Vec<(f64, &String)> = corpus
            .iter()
            .filter(|t| !my_pos.contains(t))
            .map(|t| (dot(&qv[qi], &pv_by_text[t]), t))
            .filter(|x| x.0 <= bound)
            .collect();
        c.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap());
        let want: Vec<&str> = c[..3].iter().map(|x| x.1.as_str()).collect();
        let have: Vec<&str> = (1..=3)
            .map(|k| {
                got.column_by_name(&format!("negative_{k}"))
                    .unwrap()
                    .as_string::<i32>()
                    .value(r)
            })
            .collect();
        assert_eq!(have, want, "row {r}");
        checked += 1;
    }
    // 300 rows, but positive "p3" is shared by q1 and q8: still one row per (anchor, positive).
    assert_eq!(checked, 300);
    let ids = col_i64(&got, "anchor_id");
    assert_eq!(ids[0], 0, "row position is the id without an id column");
}

#[test]
fn m_per_class_emits_one_training_batch_per_record_batch() {
    let d = tmp();
    let input = d.path().join("in/recs.parquet");
    let (batch, _, labels) = labelled(240, 8, 6, 1);
    write_parquet(&input, &[batch], 100);
    // No parquet sink to write the report next to: turn it off rather than write into the
    // working directory.
    let stage = "    label: label\n    embedding: emb\n    report: false\n    sampler: {type: m_per_class, m: 4, classes_per_batch: 4}\n    scope: {type: batch}\n    negatives: {strategy: batch_hard}\n";
    let yaml = pipeline(&input, &d.path().join("unused"), stage);
    let p = Pipeline::from_yaml(&yaml, &[]).unwrap();
    let got: Arc<std::sync::Mutex<Vec<RecordBatch>>> = Arc::default();
    let sink = got.clone();
    let mut sinks: HashMap<String, tripline::runtime::CustomSink> = HashMap::new();
    sinks.insert(
        "shards".into(),
        Box::new(move |mut s: tripline::BatchStream| {
            Box::pin(async move {
                use futures::StreamExt;
                while let Some(b) = s.next().await {
                    sink.lock().unwrap().push(b?.data);
                }
                Ok(())
            })
        }),
    );
    p.run_blocking(RunOptions {
        sinks,
        ..RunOptions::default()
    })
    .unwrap();
    let got = got.lock().unwrap();
    // 8 classes of 30 → 8 groups each → 64 groups / 4 per batch: at least 16 training
    // batches (more when the last ones need filler groups).
    assert!(got.len() >= 16, "{} batches", got.len());
    let mut anchors_seen = std::collections::HashSet::new();
    for b in got.iter() {
        assert_eq!(
            b.schema()
                .metadata()
                .get("tripline.training_batch")
                .map(String::as_str),
            Some("true")
        );
        assert_eq!(
            b.num_rows(),
            16,
            "batch_hard: one triplet per anchor of 4 × 4"
        );
        let (a, p, n) = (
            col_i64(b, "anchor_id"),
            col_i64(b, "positive_id"),
            col_i64(b, "negative_id"),
        );
        let classes: std::collections::HashSet<i32> =
            a.iter().map(|&i| labels[(i - 1000) as usize]).collect();
        assert_eq!(classes.len(), 4);
        for i in 0..b.num_rows() {
            let l = |x: i64| labels[(x - 1000) as usize];
            assert_eq!(l(a[i]), l(p[i]));
            assert_ne!(l(a[i]), l(n[i]));
            anchors_seen.insert(a[i]);
        }
    }
    assert_eq!(
        anchors_seen.len(),
        240,
        "every record is an anchor in the epoch"
    );
}

#[test]
fn a_missing_embedding_column_is_reported_with_its_key() {
    let d = tmp();
    let input = d.path().join("in/recs.parquet");
    let (batch, _, _) = labelled(20, 2, 4, 1);
    write_parquet(&input, &[batch], 100);
    let stage = "    label: label\n    embedding: embedding\n";
    let err = Pipeline::from_yaml(&pipeline(&input, &d.path().join("o"), stage), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`embedding` is not in the input") && err.contains("emb"),
        "{err}"
    );
}
