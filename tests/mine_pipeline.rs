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

/// `yaml` (from [`pipeline`]) with a second Parquet source `docs` reading `path`; `extra`
/// adds keys to it.
fn with_docs_source(yaml: String, path: &Path, extra: &str) -> String {
    yaml.replace(
        "stages:\n",
        &format!(
            "  docs:\n    type: parquet\n    path: {}\n{extra}stages:\n",
            path.display()
        ),
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

/// 300 (anchor, positive) pairs in 8 dimensions: anchor `q{i/2}` for pairs 2k, 2k+1 (two
/// positives each), positive 17 repeats positive 3's text. Vectors by text.
struct Pairs {
    anchors: Vec<String>,
    positives: Vec<String>,
    vec_of: HashMap<String, Vec<f32>>,
}

impl Pairs {
    fn new(rng: &mut rand_chacha::ChaCha8Rng) -> Pairs {
        let n = 300;
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
        let mut vec_of: HashMap<String, Vec<f32>> = HashMap::new();
        for q in 0..n / 2 {
            let v = unit((0..8).map(|_| rng.random::<f32>() - 0.5).collect());
            vec_of.insert(format!("q{q}"), v);
        }
        for (i, t) in positives.iter().enumerate() {
            if !vec_of.contains_key(t) {
                let q = &vec_of[&anchors[i]];
                let v = unit(
                    q.iter()
                        .map(|x| x + 0.8 * (rng.random::<f32>() - 0.5))
                        .collect(),
                );
                vec_of.insert(t.clone(), v);
            }
        }
        Pairs {
            anchors,
            positives,
            vec_of,
        }
    }

    fn batch(&self) -> RecordBatch {
        let emb = |ts: &[String]| {
            vectors(
                &ts.iter()
                    .map(|t| self.vec_of[t].clone())
                    .collect::<Vec<_>>(),
            )
        };
        RecordBatch::try_from_iter(vec![
            (
                "anchor",
                Arc::new(StringArray::from(self.anchors.clone())) as ArrayRef,
            ),
            (
                "positive",
                Arc::new(StringArray::from(self.positives.clone())),
            ),
            ("anchor_embedding", emb(&self.anchors)),
            ("positive_embedding", emb(&self.positives)),
        ])
        .unwrap()
    }

    /// Checks every output row against a naive reference with sentence-transformers
    /// semantics: candidates are the distinct positives plus `corpus` (deduplicated by text),
    /// anchors grouped by text, reference score = the group's smallest positive score, the
    /// group's positives excluded, relative margin 0.05, the 3 best kept. Returns the rows.
    fn check(&self, got: &RecordBatch, corpus: &[String]) -> usize {
        let mut cands: Vec<String> = Vec::new();
        for p in self.positives.iter().chain(corpus) {
            if !cands.contains(p) {
                cands.push(p.clone());
            }
        }
        let v = |t: &str| &self.vec_of[t];
        let anchor_col = got.column_by_name("anchor").unwrap().as_string::<i32>();
        for r in 0..got.num_rows() {
            let q = anchor_col.value(r);
            let my_pos: Vec<&String> = (0..self.anchors.len())
                .filter(|&i| self.anchors[i] == q)
                .map(|i| &self.positives[i])
                .collect();
            let refscore = my_pos
                .iter()
                .map(|p| dot(v(q), v(p)))
                .fold(f64::INFINITY, f64::min);
            let bound = refscore - refscore.abs() * 0.05;
            let mut c: Vec<(f64, &String)> = cands
                .iter()
                .filter(|t| !my_pos.contains(t))
                .map(|t| (dot(v(q), v(t)), t))
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
        }
        got.num_rows()
    }
}

const PAIRED: &str = "    mode: paired\n    anchor: anchor\n    positive: positive\n    scope: {type: global}\n    negatives: {strategy: hard, num_negatives: 3, range: [0, 20], relative_margin: 0.05}\n    output: {format: n-tuple}\n";

fn concat(batches: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()
}

#[test]
fn paired_mode_groups_anchors_and_excludes_every_positive() {
    let d = tmp();
    let input = d.path().join("in/pairs.parquet");
    let pairs = Pairs::new(&mut rand_chacha::ChaCha8Rng::seed_from_u64(2));
    write_parquet(&input, &[pairs.batch()], 100);
    let out = d.path().join("out");
    run(&pipeline(&input, &out, PAIRED), 2);
    let got = concat(&read_output(&out));
    // 300 rows, but positive "p3" is shared by q1 and q8: still one row per (anchor, positive).
    assert_eq!(pairs.check(&got, &[]), 300);
    let ids = col_i64(&got, "anchor_id");
    assert_eq!(ids[0], 0, "row position is the id without an id column");
}

#[test]
fn paired_mode_searches_an_extra_corpus_deduplicated_against_the_positives() {
    let d = tmp();
    let input = d.path().join("in/pairs.parquet");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut pairs = Pairs::new(&mut rng);
    // Corpus: 200 documents near random anchors (hard negatives for them), then three rows
    // whose text is a positive's ("p5", "p40", "p3": never a negative of their own anchor),
    // and a repeat of corpus document 7 (one candidate, not two).
    let mut corpus: Vec<String> = (0..200).map(|i| format!("doc{i}")).collect();
    for (i, t) in corpus.iter().enumerate() {
        let q = &pairs.vec_of[&format!("q{}", (i * 37) % 150)];
        let v = unit(
            q.iter()
                .map(|x| x + 0.7 * (rng.random::<f32>() - 0.5))
                .collect(),
        );
        pairs.vec_of.insert(t.clone(), v);
    }
    corpus.extend(["p5", "p40", "p3", "doc7"].map(String::from));
    write_parquet(&input, &[pairs.batch()], 100);
    let emb: Vec<Vec<f32>> = corpus.iter().map(|t| pairs.vec_of[t].clone()).collect();
    let docs = RecordBatch::try_from_iter(vec![
        (
            "text",
            Arc::new(StringArray::from(corpus.clone())) as ArrayRef,
        ),
        ("text_embedding", vectors(&emb)),
    ])
    .unwrap();
    let corpus_path = d.path().join("in/corpus.parquet");
    write_parquet(&corpus_path, &[docs], 64);
    let out = d.path().join("out");
    let stage = format!("{PAIRED}    corpus: {{input: docs, column: text}}\n");
    let yaml = with_docs_source(
        pipeline(&input, &out, &stage),
        &corpus_path,
        "    batch_rows: 50\n",
    );
    run(&yaml, 2);
    let got = concat(&read_output(&out));
    assert_eq!(pairs.check(&got, &corpus), 300);
    // Corpus documents were mined, with ids after the 300 pair rows (corpus position + 300).
    let mut from_corpus = 0;
    for k in 1..=3 {
        let texts = got
            .column_by_name(&format!("negative_{k}"))
            .unwrap()
            .as_string::<i32>();
        let ids = col_i64(&got, &format!("negative_{k}_id"));
        for (r, id) in ids.iter().enumerate() {
            if let Some(i) = texts.value(r).strip_prefix("doc") {
                assert_eq!(*id, 300 + i.parse::<i64>().unwrap(), "row {r}");
                from_corpus += 1;
            }
        }
    }
    assert!(from_corpus > 300, "only {from_corpus} corpus negatives");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("mining_report.json")).unwrap()).unwrap();
    assert_eq!(report["corpus_rows"], 204);
    assert_eq!(report["corpus_duplicates"], 4);
    assert_eq!(report["candidates"], 299 + 200);
    // Same output for one worker: the corpus joins the candidates only after both inputs end.
    let out1 = d.path().join("out1");
    run(
        &yaml.replace(&out.display().to_string(), &out1.display().to_string()),
        1,
    );
    assert_eq!(concat(&read_output(&out1)), got);
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

#[test]
fn corpus_problems_are_reported_with_their_keys() {
    let d = tmp();
    let input = d.path().join("in/pairs.parquet");
    let pairs = Pairs::new(&mut rand_chacha::ChaCha8Rng::seed_from_u64(3));
    write_parquet(&input, &[pairs.batch()], 100);
    // A corpus whose text is an integer column and whose embeddings have 3 dimensions, not 8.
    let docs = RecordBatch::try_from_iter(vec![
        ("text", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        (
            "text_embedding",
            vectors(&[vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0]]),
        ),
    ])
    .unwrap();
    let corpus_path = d.path().join("in/corpus.parquet");
    write_parquet(&corpus_path, &[docs], 64);
    let with = |stage: &str| {
        with_docs_source(
            pipeline(&input, &d.path().join("o"), stage),
            &corpus_path,
            "",
        )
    };
    let err = |yaml: String| Pipeline::from_yaml(&yaml, &[]).unwrap_err().to_string();
    let e = err(with(&format!(
        "{PAIRED}    corpus: {{input: docs, column: text}}\n"
    )));
    assert!(
        e.contains("line 21:35: stage `mined`: column `text` is Int64")
            && e.contains("column `text` is Int64, expected the positive column's type (Utf8)"),
        "{e}"
    );
    assert!(
        e.contains("line 21:13: stage `mined`: `text_embedding` has 3")
            && e.contains(
                "`text_embedding` has 3 dimensions but the pairs' `positive_embedding` has 8"
            ),
        "{e}"
    );
    let e = err(with(&format!("{PAIRED}    corpus: {{input: dcos}}\n")));
    assert!(
        e.contains("unknown input `dcos`") && e.contains("did you mean `docs`?"),
        "{e}"
    );
    let e = err(with(&format!("{PAIRED}    corpus: {{input: recs}}\n")));
    assert!(e.contains("`recs` is already one of `inputs`"), "{e}");
    let e = err(with(
        "    label: label\n    embedding: emb\n    corpus: {input: docs}\n",
    ));
    assert!(e.contains("`corpus` belongs to paired mode"), "{e}");
}

#[test]
fn bad_corpus_rows_are_quarantined_with_their_reason_under_skip() {
    let d = tmp();
    let input = d.path().join("in/pairs.parquet");
    let pairs = Pairs::new(&mut rand_chacha::ChaCha8Rng::seed_from_u64(4));
    write_parquet(&input, &[pairs.batch()], 100);
    // Row 1: a null text; row 2: an all-zero embedding (cannot be normalised).
    let docs = RecordBatch::try_from_iter(vec![
        (
            "text",
            Arc::new(StringArray::from(vec![
                Some("d0"),
                None,
                Some("d2"),
                Some("d3"),
            ])) as ArrayRef,
        ),
        (
            "text_embedding",
            vectors(&[vec![1.0; 8], vec![0.5; 8], vec![0.0; 8], vec![-1.0; 8]]),
        ),
    ])
    .unwrap();
    let corpus_path = d.path().join("in/corpus.parquet");
    write_parquet(&corpus_path, &[docs], 64);
    let out = d.path().join("out");
    let stage = format!("{PAIRED}    on_error: skip\n    corpus: {{input: docs, column: text}}\n");
    let yaml = with_docs_source(pipeline(&input, &out, &stage), &corpus_path, "");
    let summary = Pipeline::from_yaml(&yaml, &[])
        .unwrap()
        .run_blocking(RunOptions::default())
        .unwrap();
    assert_eq!(summary.rows_quarantined, 2);
    let q = std::fs::read_to_string(out.join("quarantine/mined.jsonl")).unwrap();
    assert_eq!(q.lines().count(), 2, "{q}");
    assert!(q.contains("column `text` is null"), "{q}");
    assert!(
        q.contains("column `text_embedding`: the embedding is all zeros"),
        "{q}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("mining_report.json")).unwrap()).unwrap();
    assert_eq!(report["corpus_rows"], 4);
    assert_eq!(report["rows_skipped"], 2);
    assert_eq!(report["candidates"], 299 + 2);
}
