//! Validation: everything that can be checked before anything runs, all at once.
//!
//! Like Vector's `config::validation`, problems are collected, not returned at the first one:
//! graph problems (unknown inputs, cycles, no sink, fan-in that could deadlock), input files
//! (missing, unreadable, different schemas), columns the configuration names that the data
//! lacks, and type mismatches between what a stage needs and what its input schema holds.
//! Each problem names the file, line and column where the YAML gives them, and the component.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;

use arrow::datatypes::SchemaRef;

use super::yaml::Loc;
use super::{LoadedConfig, Section};
use crate::error::{Error, Result};
use crate::sources::SourcePlan;

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The pipeline cannot run.
    Error,
    /// The pipeline can run, but probably not as intended.
    Warning,
}

/// One problem found in a configuration.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The pipeline file.
    pub file: Option<PathBuf>,
    /// Line and column (or the `--set` override) it comes from.
    pub loc: Option<Loc>,
    /// The component, formatted (``sink `shards` ``).
    pub component: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_ref().map(|p| p.display().to_string());
        match (&file, &self.loc) {
            (Some(file), Some(Loc::File { line, column })) => {
                write!(f, "{file}:{line}:{column}: ")?
            }
            (None, Some(Loc::File { line, column })) => write!(f, "line {line}:{column}: ")?,
            (Some(file), Some(Loc::Set(s))) => write!(f, "{file} (--set {s}): ")?,
            (None, Some(Loc::Set(s))) => write!(f, "--set {s}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            (None, None) => {}
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if let Some(c) = &self.component {
            write!(f, "{c}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// What validation computed, used to build the run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Components in an order where every producer comes before its consumers.
    pub order: Vec<(Section, String)>,
    /// Per source: files and schema.
    pub sources: BTreeMap<String, SourcePlan>,
    /// Output schema of every source and stage.
    pub schemas: BTreeMap<String, SchemaRef>,
    /// Per producer, its consumers (name order).
    pub consumers: BTreeMap<String, Vec<String>>,
    /// Problems that do not stop the run.
    pub warnings: Vec<Problem>,
}

/// Validates a loaded configuration.
///
/// # Errors
/// [`Error::Config`] with every problem found.
pub fn validate(loaded: &LoadedConfig) -> Result<Plan> {
    let cfg = &loaded.config;
    let mut problems: Vec<Problem> = loaded.problems.clone();
    let broken: BTreeMap<&str, (Section, &[String])> = loaded
        .broken
        .iter()
        .map(|(s, n, i)| (n.as_str(), (*s, i.as_slice())))
        .collect();
    let mut warnings: Vec<Problem> = Vec::new();
    let label = |s: Section, n: &str| Some(format!("{} `{n}`", s.noun()));

    // Names are unique across sections.
    let mut section_of: HashMap<&str, Section> = HashMap::new();
    for (section, name) in loaded.components() {
        if let Some(prev) = section_of.insert(name, section) {
            problems.push(loaded.problem_at(
                &[section.key(), name],
                label(section, name),
                format!(
                    "the name `{name}` is also used by a {prev}; component names must be unique"
                ),
            ));
        }
    }
    for (name, (section, _)) in &broken {
        section_of.entry(name).or_insert(*section);
    }
    let has = |section: Section| broken.values().any(|(s, _)| *s == section);
    if cfg.sinks.is_empty() && !has(Section::Sinks) {
        problems.push(loaded.problem_at(
            &["sinks"],
            None,
            "the pipeline has no sink: add one under `sinks:`".into(),
        ));
    }
    if cfg.sources.is_empty() && !has(Section::Sources) {
        problems.push(loaded.problem_at(
            &["sources"],
            None,
            "the pipeline has no source: add one under `sources:`".into(),
        ));
    }
    if cfg.runtime.channel_capacity == 0 {
        problems.push(loaded.problem_at(
            &["runtime", "channel_capacity"],
            None,
            "must be at least 1".into(),
        ));
    }

    // Inputs exist and are producers.
    let mut producers: Vec<&str> = cfg
        .sources
        .keys()
        .chain(cfg.stages.keys())
        .map(String::as_str)
        .collect();
    producers.extend(
        broken
            .iter()
            .filter(|(_, (s, _))| *s != Section::Sinks)
            .map(|(n, _)| *n),
    );
    producers.sort_unstable();
    // Components reading (directly or not) from a component that failed to parse: their
    // schemas cannot be checked.
    let mut tainted: BTreeSet<String> = BTreeSet::new();
    // Every component's inputs with their key paths: `inputs[i]`, then side inputs (read as
    // separate streams, e.g. the `mine` stage's `corpus.input`).
    let mut inputs_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    // The same split: the inputs merged into one stream (what the fan-in and schema checks
    // are about), and the side inputs.
    let mut main_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut side_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    type Listed<'a> = Vec<(Vec<String>, &'a String)>;
    fn listed(inputs: &[String]) -> Listed<'_> {
        inputs
            .iter()
            .enumerate()
            .map(|(i, input)| (vec!["inputs".to_string(), i.to_string()], input))
            .collect()
    }
    let consumers_with_inputs: Vec<(Section, &String, Listed, usize, bool)> = cfg
        .stages
        .iter()
        .map(|(n, s)| {
            let mut l = listed(s.inputs());
            l.extend(
                s.side_inputs()
                    .into_iter()
                    .map(|(path, i)| (path.iter().map(|k| k.to_string()).collect(), i)),
            );
            (Section::Stages, n, l, s.inputs().len(), false)
        })
        .chain(cfg.sinks.iter().map(|(n, s)| {
            (
                Section::Sinks,
                n,
                listed(s.inputs()),
                s.inputs().len(),
                false,
            )
        }))
        .chain(
            loaded
                .broken
                .iter()
                .filter(|(s, _, _)| *s != Section::Sources)
                .map(|(s, n, i)| (*s, n, listed(i.as_slice()), i.len(), true)),
        )
        .collect();
    for (section, name, inputs, main, is_broken) in consumers_with_inputs {
        if main == 0 {
            if !is_broken {
                problems.push(loaded.problem_at(
                    &[section.key(), name, "inputs"],
                    label(section, name),
                    "`inputs` is empty: name at least one source or stage".into(),
                ));
            }
            continue;
        }
        let mut ok = Vec::new();
        let (mut merged, mut side) = (Vec::new(), Vec::new());
        for (i, (key, input)) in inputs.iter().enumerate() {
            let mut at = vec![section.key(), name.as_str()];
            at.extend(key.iter().map(String::as_str));
            if *input == name {
                problems.push(loaded.problem_at(
                    &at,
                    label(section, name),
                    "a component cannot read its own output".into(),
                ));
            } else if cfg.sinks.contains_key(*input) {
                problems.push(loaded.problem_at(
                    &at,
                    label(section, name),
                    format!("`{input}` is a sink; inputs must be sources or stages"),
                ));
            } else if !producers.contains(&input.as_str()) {
                let hint = super::yaml::suggest(input, producers.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                problems.push(loaded.problem_at(
                    &at,
                    label(section, name),
                    format!(
                        "unknown input `{input}` (sources and stages: {}){hint}",
                        producers.join(", ")
                    ),
                ));
            } else if ok.contains(&input.as_str()) {
                let msg = if i < main {
                    format!("input `{input}` is listed twice")
                } else {
                    format!("`{input}` is already one of `inputs`; read it only once")
                };
                problems.push(loaded.problem_at(&at, label(section, name), msg));
            } else if broken.contains_key(input.as_str()) {
                tainted.insert(name.clone());
            } else {
                ok.push(input.as_str());
                if i < main {
                    merged.push(input.as_str());
                } else {
                    side.push(input.as_str());
                }
            }
        }
        if !is_broken {
            inputs_of.insert(name.as_str(), ok);
            main_of.insert(name.as_str(), merged);
            side_of.insert(name.as_str(), side);
        }
    }
    // Consumers per producer; producers that feed nothing are worth a warning.
    let mut consumers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (consumer, inputs) in &inputs_of {
        for i in inputs {
            consumers
                .entry(i.to_string())
                .or_default()
                .push(consumer.to_string());
        }
    }
    for p in &producers {
        if !consumers.contains_key(*p)
            && !broken.contains_key(p)
            && !broken_consumers_read(p, &loaded.broken)
        {
            let section = section_of[p];
            let mut w = loaded.problem_at(
                &[section.key(), p],
                label(section, p),
                "its output goes nowhere: no stage or sink reads it".into(),
            );
            w.severity = Severity::Warning;
            warnings.push(w);
        }
    }

    // Topological order (Kahn), reporting cycles.
    let mut order: Vec<(Section, String)> = Vec::new();
    let mut indegree: BTreeMap<&str, usize> = BTreeMap::new();
    for (section, name) in loaded.components() {
        let _ = section;
        indegree.insert(name, inputs_of.get(name).map_or(0, Vec::len));
    }
    let mut ready: Vec<&str> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| *n)
        .collect();
    ready.sort_by_key(|n| (section_of[n], *n));
    let mut ready: std::collections::VecDeque<&str> = ready.into();
    while let Some(n) = ready.pop_front() {
        order.push((section_of[n], n.to_string()));
        for c in consumers.get(n).into_iter().flatten() {
            let d = indegree
                .get_mut(c.as_str())
                .expect("consumer is a component");
            *d -= 1;
            if *d == 0 {
                ready.push_back(c.as_str());
            }
        }
    }
    if order.len() < indegree.len() {
        let placed: BTreeSet<&str> = order.iter().map(|(_, n)| n.as_str()).collect();
        let stuck: Vec<&str> = indegree
            .keys()
            .filter(|n| !placed.contains(*n))
            .copied()
            .collect();
        for n in cfg.stages.keys().filter(|n| stuck.contains(&n.as_str())) {
            problems.push(loaded.problem_at(
                &["stages", n, "inputs"],
                label(Section::Stages, n),
                format!("is part of a cycle among: {}", stuck.join(", ")),
            ));
        }
    }

    // Fan-in whose inputs share an upstream could deadlock (inputs are read one after another).
    for (name, inputs) in &main_of {
        if inputs.len() < 2 {
            continue;
        }
        let ancestors: Vec<BTreeSet<&str>> =
            inputs.iter().map(|i| ancestors_of(i, &inputs_of)).collect();
        for a in 0..inputs.len() {
            for b in a + 1..inputs.len() {
                if let Some(common) = ancestors[a].intersection(&ancestors[b]).next() {
                    let section = section_of[name];
                    problems.push(loaded.problem_at(
                        &[section.key(), name, "inputs"],
                        label(section, name),
                        format!(
                            "inputs `{}` and `{}` both descend from `{common}`; inputs are read one after another, so this could stall: read `{common}` directly or use a single input",
                            inputs[a], inputs[b]
                        ),
                    ));
                }
            }
        }
    }

    // Sources: files, schemas, columns.
    let mut sources = BTreeMap::new();
    let mut schemas: BTreeMap<String, SchemaRef> = BTreeMap::new();
    for (name, src) in &cfg.sources {
        match crate::sources::plan(src) {
            Ok(p) => {
                schemas.insert(name.clone(), p.schema.clone());
                sources.insert(name.clone(), p);
            }
            Err(ps) => {
                for (key, msg) in ps {
                    let mut path = vec!["sources", name.as_str()];
                    path.extend(key.iter().map(String::as_str));
                    problems.push(loaded.problem_at(&path, label(Section::Sources, name), msg));
                }
            }
        }
    }

    // Schemas through stages (in order), then sinks.
    let cyclic = order.len() < indegree.len();
    if !cyclic {
        for (section, name) in &order {
            let Some(all) = inputs_of.get(name.as_str()) else {
                continue;
            };
            if tainted.contains(name) || all.iter().any(|i| tainted.contains(*i)) {
                tainted.insert(name.clone());
                continue;
            }
            let inputs = &main_of[name.as_str()];
            let side_inputs = &side_of[name.as_str()];
            let in_schemas: Vec<(&str, &SchemaRef)> = inputs
                .iter()
                .filter_map(|i| schemas.get(*i).map(|s| (*i, s)))
                .collect();
            let side: Vec<SchemaRef> = side_inputs
                .iter()
                .filter_map(|i| schemas.get(*i).cloned())
                .collect();
            if in_schemas.len() < inputs.len()
                || in_schemas.is_empty()
                || side.len() < side_inputs.len()
            {
                continue; // an upstream problem was already reported
            }
            let first = in_schemas[0].1.clone();
            let mut same = true;
            for (i, s) in &in_schemas[1..] {
                if let Some(d) = crate::sources::same_projection(&first, s) {
                    same = false;
                    problems.push(
                        loaded.problem_at(
                            &[section.key(), name, "inputs"],
                            label(*section, name),
                            format!("input `{i}` {d} (`{}`)", in_schemas[0].0)
                                .replace("the first file", "the first input"),
                        ),
                    );
                }
            }
            if !same {
                continue;
            }
            let result = match section {
                Section::Stages => crate::stages::output_schema(&cfg.stages[name], &first, &side),
                Section::Sinks => {
                    crate::sinks::check(&cfg.sinks[name], &first).map(|_| first.clone())
                }
                Section::Sources => continue,
            };
            match result {
                Ok(s) => {
                    if *section == Section::Stages {
                        schemas.insert(name.clone(), s);
                    }
                }
                Err(ps) => {
                    for (key, msg) in ps {
                        let mut path = vec![section.key(), name.as_str()];
                        path.extend(key.iter().map(String::as_str));
                        problems.push(loaded.problem_at(&path, label(*section, name), msg));
                    }
                }
            }
        }
    }

    problems.sort_by_key(|p| match &p.loc {
        Some(Loc::File { line, column }) => (0, *line, *column),
        Some(Loc::Set(_)) => (1, 0, 0),
        None => (2, 0, 0),
    });
    if problems.is_empty() {
        Ok(Plan {
            order,
            sources,
            schemas,
            consumers,
            warnings,
        })
    } else {
        Err(Error::Config(problems))
    }
}

fn broken_consumers_read(name: &str, broken: &[(Section, String, Vec<String>)]) -> bool {
    broken
        .iter()
        .any(|(_, _, inputs)| inputs.iter().any(|i| i == name))
}

fn ancestors_of<'a>(
    node: &'a str,
    inputs_of: &BTreeMap<&'a str, Vec<&'a str>>,
) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        if out.insert(n) {
            stack.extend(inputs_of.get(n).into_iter().flatten().copied());
        }
    }
    out
}
