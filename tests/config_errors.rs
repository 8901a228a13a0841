//! Golden error messages for bad configurations: every problem reported at once, each with
//! file:line:column and the component's name, with "did you mean" suggestions.

mod common;

use std::path::Path;

use common::*;
use tripline::{Error, Pipeline};

/// Validates `yaml` written to `dir/pipeline.yaml`; returns the error text with the temporary
/// directory replaced by `$DIR`.
fn problems(dir: &Path, yaml: &str) -> String {
    let file = dir.join("pipeline.yaml");
    std::fs::write(&file, yaml.replace("$DIR", &dir.display().to_string())).unwrap();
    match Pipeline::load(&file, &[]) {
        Ok(_) => panic!("expected validation to fail"),
        Err(e) => {
            assert!(matches!(e, Error::Config(_)), "{e:?}");
            assert_eq!(e.exit_code(), 2);
            e.to_string().replace(&dir.display().to_string(), "$DIR")
        }
    }
}

fn fixture() -> tempfile::TempDir {
    let d = tmp();
    write_docs(&d.path().join("docs.parquet"), 0, 10, 10);
    d
}

#[test]
fn unknown_keys_are_located_with_suggestions() {
    let d = fixture();
    let got = problems(
        d.path(),
        "version: 1
sources:
  docs:
    type: parquet
    path: $DIR/docs.parquet
    batch_row: 10
sinks:
  shards:
    type: parquet_shards
    inputs: [docs]
    path: $DIR/out
    rows_per_shrd: 5
",
    );
    assert_eq!(
        got,
        "2 problems in the pipeline configuration:
  $DIR/pipeline.yaml:6:5: source `docs`: unknown field `batch_row`, expected one of `path`, `columns`, `rename`, `batch_rows`, `shard`, `buffer`; did you mean `batch_rows`?
  $DIR/pipeline.yaml:12:5: sink `shards`: unknown field `rows_per_shrd`, expected one of `inputs`, `path`, `rows_per_shard`, `max_shard_bytes`, `row_group_rows`, `row_group_bytes`, `compression`, `compression_level`, `overwrite`; did you mean `rows_per_shard`?"
    );
}

#[test]
fn wrong_types_unknown_types_and_inputs_together() {
    let d = fixture();
    let got = problems(
        d.path(),
        "version: 1
sources:
  docs:
    type: parqet
    path: $DIR/docs.parquet
stages:
  clean:
    type: clean
    inputs: [dcs]
    text_columns: [text]
    min_chars: lots
sinks:
  shards:
    type: parquet_shards
    inputs: [clean]
    path: $DIR/out
",
    );
    assert_eq!(
        got,
        "3 problems in the pipeline configuration:
  $DIR/pipeline.yaml:4:11: source `docs`: unknown source type `parqet`, expected one of: parquet, arrow_ipc; did you mean `parquet`?
  $DIR/pipeline.yaml:9:14: stage `clean`: unknown input `dcs` (sources and stages: clean, docs); did you mean `docs`?
  $DIR/pipeline.yaml:11:16: stage `clean`: invalid type: string \"lots\", expected usize"
    );
}

#[test]
fn graph_problems_cycles_missing_files_and_no_sink() {
    let d = fixture();
    let got = problems(
        d.path(),
        "version: 1
sources:
  docs:
    type: parquet
    path: $DIR/missing/*.parquet
stages:
  a:
    type: clean
    inputs: [b]
    not_null: [id]
  b:
    type: clean
    inputs: [a]
    not_null: [id]
sinks: {}
",
    );
    assert_eq!(
        got,
        "4 problems in the pipeline configuration:
  $DIR/pipeline.yaml:5:11: source `docs`: no file matches `$DIR/missing/*.parquet`
  $DIR/pipeline.yaml:9:13: stage `a`: is part of a cycle among: a, b
  $DIR/pipeline.yaml:13:13: stage `b`: is part of a cycle among: a, b
  $DIR/pipeline.yaml:15:8: the pipeline has no sink: add one under `sinks:`"
    );
}

#[test]
fn columns_and_types_are_checked_against_the_data() {
    let d = fixture();
    let got = problems(
        d.path(),
        "version: 1
sources:
  docs:
    type: parquet
    path: $DIR/docs.parquet
    columns: [id, lable, text]
    rename: {txt: body}
stages:
  clean:
    type: clean
    inputs: [docs]
    text_columns: [id, txt]
sinks:
  shards:
    type: parquet_shards
    inputs: [clean]
    path: $DIR/out
",
    );
    assert_eq!(
        got,
        "2 problems in the pipeline configuration:
  $DIR/pipeline.yaml:6:19: source `docs`: $DIR/docs.parquet: column `lable` is not in the file (it has: id, label, text); did you mean `label`?
  $DIR/pipeline.yaml:7:19: source `docs`: $DIR/docs.parquet: cannot rename `txt`: it is not among the columns read (id, text)"
    );
    // With the source fixed, the stage's needs are checked against the source's schema.
    let got = problems(
        d.path(),
        "version: 1
sources:
  docs:
    type: parquet
    path: $DIR/docs.parquet
stages:
  clean:
    type: clean
    inputs: [docs]
    text_columns: [id, txt]
sinks:
  shards:
    type: parquet_shards
    inputs: [clean]
    path: $DIR/out
",
    );
    assert_eq!(
        got,
        "2 problems in the pipeline configuration:
  $DIR/pipeline.yaml:10:20: stage `clean`: column `id` is Int64, expected a string column (Utf8 or LargeUtf8)
  $DIR/pipeline.yaml:10:24: stage `clean`: column `txt` is not in the input (it has: id, label, text); did you mean `text`?"
    );
}

#[test]
fn yaml_syntax_and_version_errors() {
    let d = fixture();
    let got = problems(d.path(), "version: 1\nsources: [unclosed\n");
    assert!(
        got.starts_with("1 problem in the pipeline configuration:\n  $DIR/pipeline.yaml:"),
        "{got}"
    );
    let got = problems(d.path(), "version: 2\nsources: {}\nsinks: {}\nsorces: {}\n");
    assert_eq!(
        got,
        "1 problem in the pipeline configuration:
  $DIR/pipeline.yaml:4:1: unknown top-level key `sorces`, expected one of: version, seed, runtime, sources, stages, sinks; did you mean `sources`?"
    );
    let got = problems(d.path(), "version: 2\nsources: {}\nsinks: {}\n");
    assert_eq!(
        got,
        "1 problem in the pipeline configuration:
  $DIR/pipeline.yaml:1:10: unsupported version 2: this build of tripline reads version 1"
    );
}

#[test]
fn undefined_environment_variables_and_bad_overrides_are_reported() {
    let d = fixture();
    let yaml = "version: 1\nsources:\n  docs:\n    type: parquet\n    path: ${TRIPLINE_TEST_UNSET_VAR}\nsinks:\n  shards:\n    type: parquet_shards\n    inputs: [docs]\n    path: $DIR/out\n";
    let got = problems(d.path(), yaml);
    assert_eq!(
        got,
        "1 problem in the pipeline configuration:
  $DIR/pipeline.yaml:5:11: environment variable `TRIPLINE_TEST_UNSET_VAR` is not set (write `${TRIPLINE_TEST_UNSET_VAR:-default}` to give a default)"
    );
    let file = d.path().join("pipeline.yaml");
    let e = Pipeline::load(&file, &["sources.docs.path.x=1".into()]).unwrap_err();
    let got = e
        .to_string()
        .replace(&d.path().display().to_string(), "$DIR");
    assert!(
        got.contains(
            "(--set sources.docs.path.x=1): `sources.docs.path` is a string, so it has no key `x`"
        ),
        "{got}"
    );
}

#[test]
fn overrides_and_environment_reach_the_config() {
    let d = fixture();
    let file = d.path().join("pipeline.yaml");
    let yaml = "version: 1\nseed: ${TRIPLINE_TEST_SEED:-3}\nsources:\n  docs:\n    type: parquet\n    path: nowhere.parquet\nsinks:\n  shards:\n    type: parquet_shards\n    inputs: [docs]\n    path: out/docs\n    rows_per_shard: 100000\n";
    std::fs::write(&file, yaml).unwrap();
    let input = d.path().join("docs.parquet");
    let out = d.path().join("other");
    let p = Pipeline::load(
        &file,
        &[
            format!("sinks.shards.path={}", out.display()),
            format!("sources.docs.path={}", input.display()),
            "sinks.shards.rows_per_shard=7".into(),
        ],
    )
    .unwrap();
    assert_eq!(p.config().seed, 3);
    let tripline::config::SinkConfig::ParquetShards(s) = &p.config().sinks["shards"] else {
        panic!("parquet_shards sink")
    };
    assert_eq!(s.path, out);
    assert_eq!(s.rows_per_shard, Some(7));
}
