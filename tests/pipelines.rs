//! Every example pipeline validates, starts with the editor schema line, and the checked-in
//! JSON Schemas match the code. Set `TRIPLINE_BLESS=1` to rewrite stale schema files.

use std::path::Path;

use tripline::Pipeline;

#[test]
fn every_example_pipeline_validates() {
    let mut n = 0;
    for entry in std::fs::read_dir("pipelines").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schemas/pipeline.schema.json\n"),
            "{} must start with the yaml-language-server schema line",
            path.display()
        );
        if let Err(e) = Pipeline::load(&path, &[]) {
            panic!("{} does not validate:\n{e}", path.display());
        }
        n += 1;
    }
    assert!(n >= 3, "expected the example pipelines, found {n}");
}

fn check_current(path: &str, want: String) {
    let path = Path::new(path);
    let have = std::fs::read_to_string(path).unwrap_or_default();
    if have != want {
        if std::env::var_os("TRIPLINE_BLESS").is_some() {
            std::fs::write(path, want).unwrap();
        } else {
            panic!(
                "{} is stale: run `TRIPLINE_BLESS=1 cargo test --test pipelines` (or `tripline schema > {}`) and commit it",
                path.display(),
                path.display()
            );
        }
    }
}

#[test]
fn pipeline_schema_is_current() {
    check_current(
        "schemas/pipeline.schema.json",
        tripline::config::json_schema(),
    );
}

#[test]
fn manifest_schema_is_current() {
    check_current(
        "schemas/manifest.schema.json",
        tripline::sinks::manifest::json_schema(),
    );
}

#[test]
fn configuration_reference_is_current() {
    check_current(
        "docs/CONFIG.md",
        tripline::config::reference::reference_markdown(),
    );
}
