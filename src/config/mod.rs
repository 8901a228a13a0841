//! Pipeline configuration: the serde types users write in YAML, the loader, and validation.
//!
//! Config types are plain data (`XxxConfig`); the runtime builds its own types from them after
//! [`validate`](validate::validate) has accepted the whole file. Every enum is closed and
//! tagged by `type`; every struct rejects unknown keys.

pub mod reference;
pub mod validate;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::{Error, Result};
pub use validate::{Problem, Severity};
use yaml::{Loc, Node, NodeError, Value};

/// The configuration format version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// A whole pipeline file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Configuration format version; must be `1`.
    pub version: u32,
    /// Seed for every random choice the pipeline makes (sampling, augmentation, sharding of
    /// epochs). Same config and seed give byte-identical output.
    #[serde(default)]
    pub seed: u64,
    /// Engine settings shared by every component.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Where records come from, keyed by component name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Transformations, keyed by component name.
    #[serde(default)]
    pub stages: BTreeMap<String, StageConfig>,
    /// Where results go, keyed by component name.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
}

/// Engine settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Capacity, in batches, of every channel between two components (unless the producing
    /// component sets its own `buffer`). Bounds memory: at most this many batches wait
    /// between any two components.
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// Threads in the shared CPU worker pool used by function stages. Default: the number of
    /// available cores.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Where rows skipped under `on_error: skip` are written. Default: `quarantine/` inside the
    /// first `parquet_shards` sink's output directory (by name order), else `./quarantine`.
    #[serde(default)]
    pub quarantine: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            channel_capacity: default_channel_capacity(),
            workers: None,
            quarantine: None,
        }
    }
}

fn default_channel_capacity() -> usize {
    4
}

/// One path or glob, or a list of them.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum Paths {
    /// A single path or glob pattern.
    One(String),
    /// Several paths or glob patterns, read in the order given (each glob's matches sorted).
    Many(Vec<String>),
}

impl Paths {
    /// The patterns, in order.
    pub fn patterns(&self) -> Vec<&str> {
        match self {
            Paths::One(s) => vec![s.as_str()],
            Paths::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// Splits the input between processes: this process reads the units (Parquet row groups,
/// IPC record batches) whose global index `i` satisfies `i % count == index`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// This process's shard, `0 <= index < count`.
    pub index: u32,
    /// How many processes share the input.
    pub count: u32,
}

/// What a stage does with a row it cannot process.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Stop the pipeline with an error naming the row (default).
    #[default]
    Fail,
    /// Drop the row, count it, and write it with the reason to the quarantine directory.
    Skip,
}

/// A source component.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// Parquet files.
    Parquet(ParquetSourceConfig),
    /// Arrow IPC files (file or stream format, detected from the content).
    ArrowIpc(ArrowIpcSourceConfig),
}

/// `type: parquet` — streams Parquet files row group by row group.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParquetSourceConfig {
    /// A path or glob, or a list of them. Relative paths are resolved against the current
    /// directory. Files are read in pattern order, each glob's matches in sorted order.
    pub path: Paths,
    /// Columns to read (projection pushdown); default: all.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Renames applied after projection: `{old_name: new_name}`.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Rows per batch emitted.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Read only one shard of the input (row groups are the unit).
    #[serde(default)]
    pub shard: Option<ShardConfig>,
    /// Capacity in batches of this source's output channel(s); default `runtime.channel_capacity`.
    #[serde(default)]
    pub buffer: Option<usize>,
}

/// `type: arrow_ipc` — Arrow IPC file or stream format.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArrowIpcSourceConfig {
    /// A path or glob, or a list of them.
    pub path: Paths,
    /// Columns to read; default: all.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Renames applied after projection: `{old_name: new_name}`.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Maximum rows per batch emitted (larger IPC batches are sliced).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Read only one shard of the input (IPC record batches are the unit).
    #[serde(default)]
    pub shard: Option<ShardConfig>,
    /// Map files in the IPC file format into memory and decode record batches in place (no
    /// copy, and batches of other shards are never read). The file must not be truncated or
    /// rewritten while it is read: a mapped file that shrinks stops the process with SIGBUS.
    /// `false` reads it into memory batch by batch instead. Files in the stream format are
    /// always read.
    #[serde(default = "default_true")]
    pub memory_map: bool,
    /// Capacity in batches of this source's output channel(s); default `runtime.channel_capacity`.
    #[serde(default)]
    pub buffer: Option<usize>,
}

fn default_batch_rows() -> usize {
    8192
}

/// A stage component.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StageConfig {
    /// Row hygiene: rejects rows with null, empty or oversized values in named columns.
    Clean(CleanStageConfig),
    /// Augmented views of records (text, image and vector ops), K views per record.
    Augment(crate::stages::augment::AugmentStageConfig),
    /// Embeddings from an ONNX model (text, image or vector input).
    Embed(crate::stages::embed::EmbedStageConfig),
    /// Pairs, triplets and n-tuples: class-balanced sampling and hard-negative mining.
    Mine(crate::stages::mine::MineStageConfig),
}

/// `type: clean` — checks and tidies text rows before they reach expensive stages.
///
/// Runs on the shared worker pool; bad rows follow `on_error`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CleanStageConfig {
    /// Upstream components whose output this stage reads.
    pub inputs: Vec<String>,
    /// Text columns (Utf8 / LargeUtf8) that must be non-null and satisfy the length bounds.
    #[serde(default)]
    pub text_columns: Vec<String>,
    /// Columns of any type that must be non-null.
    #[serde(default)]
    pub not_null: Vec<String>,
    /// Trim leading and trailing white space of the text columns in the output.
    #[serde(default)]
    pub trim: bool,
    /// Minimum length in characters (after trimming when `trim` is set).
    #[serde(default = "default_min_chars")]
    pub min_chars: usize,
    /// Maximum length in characters; default unlimited.
    #[serde(default)]
    pub max_chars: Option<usize>,
    /// What to do with a bad row.
    #[serde(default)]
    pub on_error: OnError,
    /// Batches processed in parallel on the worker pool; default: pool size.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Keep input order (default). `false` emits batches as they finish.
    #[serde(default = "default_true")]
    pub ordered: bool,
    /// Capacity in batches of this stage's output channel(s).
    #[serde(default)]
    pub buffer: Option<usize>,
}

fn default_min_chars() -> usize {
    1
}

fn default_true() -> bool {
    true
}

/// A sink component.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// Rolling Parquet shards plus `manifest.json`.
    ParquetShards(ParquetShardsSinkConfig),
    /// An Arrow Flight server that serves training batches to trainer processes.
    Flight(crate::sinks::flight::FlightSinkConfig),
}

/// Parquet compression codec.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// Zstandard (default).
    #[default]
    Zstd,
    /// Snappy.
    Snappy,
    /// LZ4 (raw).
    Lz4,
    /// No compression.
    None,
}

/// `type: parquet_shards` — writes `part-00000.parquet`, … and `manifest.json` last.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParquetShardsSinkConfig {
    /// Upstream components whose output is written (in the order given).
    pub inputs: Vec<String>,
    /// Output directory.
    pub path: PathBuf,
    /// Start a new shard after this many rows. Default 1,000,000 when `max_shard_bytes` is
    /// not set either.
    #[serde(default)]
    pub rows_per_shard: Option<u64>,
    /// Start a new shard once the current one reaches about this many bytes.
    #[serde(default)]
    pub max_shard_bytes: Option<u64>,
    /// Rows per Parquet row group (at most).
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// A row group is also closed once its data reaches about this many bytes (uncompressed
    /// Arrow size), which bounds the sink's memory for wide rows such as embeddings: it holds
    /// at most one row group being filled plus one being encoded per worker.
    #[serde(default = "default_row_group_bytes")]
    pub row_group_bytes: u64,
    /// Compression codec.
    #[serde(default)]
    pub compression: Codec,
    /// Codec level (zstd: 1–22, default 1).
    #[serde(default)]
    pub compression_level: Option<i32>,
    /// Replace the contents of a non-empty output directory.
    #[serde(default)]
    pub overwrite: bool,
}

fn default_row_group_rows() -> usize {
    65536
}

fn default_row_group_bytes() -> u64 {
    32 << 20
}

impl ParquetShardsSinkConfig {
    /// Rows per shard after defaults.
    pub fn effective_rows_per_shard(&self) -> Option<u64> {
        match (self.rows_per_shard, self.max_shard_bytes) {
            (None, None) => Some(1_000_000),
            (r, _) => r,
        }
    }
}

macro_rules! tagged_config {
    ($enum:ident, $what:literal { $($tag:literal => $variant:ident($ty:ty)),* $(,)? }) => {
        impl $enum {
            /// Every `type` this kind of component accepts.
            pub const KINDS: &'static [&'static str] = &[$($tag),*];

            /// The component's `type`.
            pub fn kind(&self) -> &'static str {
                match self { $($enum::$variant(_) => $tag),* }
            }

            /// Parses one component from its YAML mapping, dispatching on `type` so that errors
            /// inside the variant keep their line and column.
            pub(crate) fn from_node(node: &Node) -> std::result::Result<Self, NodeError> {
                let kind = component_type(node, $what, Self::KINDS)?;
                let body = node.without_key("type");
                match kind {
                    $($tag => Ok($enum::$variant(yaml::from_node::<$ty>(&body)?)),)*
                    _ => unreachable!("component_type checks the kind"),
                }
            }
        }
    };
}

tagged_config!(SourceConfig, "source" {
    "parquet" => Parquet(ParquetSourceConfig),
    "arrow_ipc" => ArrowIpc(ArrowIpcSourceConfig),
});
tagged_config!(StageConfig, "stage" {
    "clean" => Clean(CleanStageConfig),
    "augment" => Augment(crate::stages::augment::AugmentStageConfig),
    "embed" => Embed(crate::stages::embed::EmbedStageConfig),
    "mine" => Mine(crate::stages::mine::MineStageConfig),
});
tagged_config!(SinkConfig, "sink" {
    "parquet_shards" => ParquetShards(ParquetShardsSinkConfig),
    "flight" => Flight(crate::sinks::flight::FlightSinkConfig),
});

fn component_type<'a>(
    node: &'a Node,
    what: &str,
    kinds: &[&'static str],
) -> std::result::Result<&'a str, NodeError> {
    if node.as_map().is_none() {
        return Err(NodeError {
            message: format!("a {what} must be a mapping with a `type` key"),
            loc: node.loc.clone(),
        });
    }
    let Some(t) = node.get("type") else {
        return Err(NodeError {
            message: format!("missing `type`; expected one of: {}", kinds.join(", ")),
            loc: node.loc.clone(),
        });
    };
    match t.as_str() {
        Some(k) if kinds.contains(&k) => Ok(k),
        Some(k) => {
            let hint = yaml::suggest(k, kinds.iter().copied())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            Err(NodeError {
                message: format!(
                    "unknown {what} type `{k}`, expected one of: {}{hint}",
                    kinds.join(", ")
                ),
                loc: t.loc.clone(),
            })
        }
        None => Err(NodeError {
            message: format!(
                "`type` must be a string; expected one of: {}",
                kinds.join(", ")
            ),
            loc: t.loc.clone(),
        }),
    }
}

impl StageConfig {
    /// The upstream components this stage reads.
    pub fn inputs(&self) -> &[String] {
        match self {
            StageConfig::Clean(c) => &c.inputs,
            StageConfig::Augment(c) => &c.inputs,
            StageConfig::Embed(c) => &c.inputs,
            StageConfig::Mine(c) => &c.inputs,
        }
    }

    /// Upstream components this stage reads as separate streams (not merged into `inputs`),
    /// each with the key path that names it: the `mine` stage's `corpus.input`.
    pub fn side_inputs(&self) -> Vec<(&'static [&'static str], &String)> {
        match self {
            StageConfig::Mine(c) => c
                .corpus
                .iter()
                .map(|k| (&["corpus", "input"][..], &k.input))
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl SinkConfig {
    /// The upstream components this sink reads.
    pub fn inputs(&self) -> &[String] {
        match self {
            SinkConfig::ParquetShards(c) => &c.inputs,
            SinkConfig::Flight(c) => &c.inputs,
        }
    }
}

/// Which section a component is declared in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// `sources:`
    Sources,
    /// `stages:`
    Stages,
    /// `sinks:`
    Sinks,
}

impl Section {
    /// The YAML key.
    pub fn key(self) -> &'static str {
        match self {
            Section::Sources => "sources",
            Section::Stages => "stages",
            Section::Sinks => "sinks",
        }
    }

    /// The singular noun used in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Section::Sources => "source",
            Section::Stages => "stage",
            Section::Sinks => "sink",
        }
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}

/// A configuration loaded from a file, with what is needed to report problems precisely.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The typed configuration.
    pub config: PipelineConfig,
    /// The file it came from (`None` for text loaded from memory).
    pub file: Option<PathBuf>,
    /// The YAML tree after environment substitution and overrides, for locating problems.
    pub root: Node,
    /// sha256 (hex) of the resolved configuration as canonical JSON.
    pub config_hash: String,
    /// Problems found while parsing components; [`validate::validate`] reports them together
    /// with its own, so that one run shows every problem.
    pub problems: Vec<Problem>,
    /// Components that failed to parse: their section, name and (when readable) `inputs`.
    pub broken: Vec<(Section, String, Vec<String>)>,
}

impl LoadedConfig {
    /// The location of the node at `path`, if any.
    pub fn loc(&self, path: &[&str]) -> Option<Loc> {
        self.root.path(path).and_then(|n| n.loc.clone())
    }

    /// A problem located at `path` (falling back to its nearest located parent); `component`
    /// is already formatted (``sink `shards` ``).
    pub fn problem_at(&self, path: &[&str], component: Option<String>, message: String) -> Problem {
        let mut loc = None;
        for n in (0..=path.len()).rev() {
            if let Some(l) = self.loc(&path[..n]) {
                loc = Some(l);
                break;
            }
        }
        Problem {
            severity: Severity::Error,
            file: self.file.clone(),
            loc,
            component,
            message,
        }
    }

    /// Every component name with its section, in section then name order.
    pub fn components(&self) -> Vec<(Section, &str)> {
        let c = &self.config;
        c.sources
            .keys()
            .map(|k| (Section::Sources, k.as_str()))
            .chain(c.stages.keys().map(|k| (Section::Stages, k.as_str())))
            .chain(c.sinks.keys().map(|k| (Section::Sinks, k.as_str())))
            .collect()
    }
}

/// Loads a pipeline file: reads it, substitutes `${VAR}`, applies `--set` overrides and parses
/// every component. Structural checks (inputs, cycles, files, schemas) are
/// [`validate::validate`]'s job.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Config`] listing every problem found
/// (syntax, unknown keys, wrong types, undefined variables, bad overrides), each located.
pub fn load(path: &Path, overrides: &[String]) -> Result<LoadedConfig> {
    strict(load_partial(path, overrides)?)
}

/// Like [`load`], but component-level problems are kept in [`LoadedConfig::problems`] instead
/// of failing, so that validation can add its own and report them all at once.
///
/// # Errors
/// [`Error::Io`]; [`Error::Config`] for problems that leave no usable document (syntax,
/// undefined variables, bad overrides, unknown top-level keys).
pub fn load_partial(path: &Path, overrides: &[String]) -> Result<LoadedConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    load_str_partial(&text, Some(path), overrides)
}

fn strict(l: LoadedConfig) -> Result<LoadedConfig> {
    if l.problems.is_empty() {
        Ok(l)
    } else {
        Err(Error::Config(l.problems))
    }
}

/// Like [`load`], from text in memory; `file` only labels problems.
///
/// # Errors
/// As [`load`].
pub fn load_str(text: &str, file: Option<&Path>, overrides: &[String]) -> Result<LoadedConfig> {
    strict(load_str_partial(text, file, overrides)?)
}

/// Like [`load_partial`], from text in memory.
///
/// # Errors
/// As [`load_partial`].
pub fn load_str_partial(
    text: &str,
    file: Option<&Path>,
    overrides: &[String],
) -> Result<LoadedConfig> {
    let file = file.map(Path::to_path_buf);
    let mk = |e: NodeError, component: Option<String>| Problem {
        severity: Severity::Error,
        file: file.clone(),
        loc: e.loc,
        component,
        message: e.message,
    };
    let mut root = yaml::parse(text).map_err(|e| Error::Config(vec![mk(e, None)]))?;
    let mut problems: Vec<Problem> = yaml::substitute_env(&mut root, &|k| std::env::var(k).ok())
        .into_iter()
        .map(|e| mk(e, None))
        .collect();
    for o in overrides {
        if let Err(e) = yaml::apply_override(&mut root, o) {
            problems.push(mk(e, None));
        }
    }

    let mut config = PipelineConfig {
        version: 0,
        seed: 0,
        runtime: RuntimeConfig::default(),
        sources: BTreeMap::new(),
        stages: BTreeMap::new(),
        sinks: BTreeMap::new(),
    };
    let Some(entries) = root.as_map() else {
        problems.push(mk(
            NodeError {
                message: "a pipeline file must be a mapping with `version`, `sources`, `stages` and `sinks`".into(),
                loc: root.loc.clone(),
            },
            None,
        ));
        return Err(Error::Config(problems));
    };
    let mut component_problems: Vec<Problem> = Vec::new();
    let mut broken: Vec<(Section, String, Vec<String>)> = Vec::new();
    const TOP: &[&str] = &["version", "seed", "runtime", "sources", "stages", "sinks"];
    let mut saw_version = false;
    for (key, node) in entries {
        let r: std::result::Result<(), NodeError> = match key.name.as_str() {
            "version" => {
                saw_version = true;
                yaml::from_node::<u32>(node).map(|v| config.version = v)
            }
            "seed" => yaml::from_node::<u64>(node).map(|v| config.seed = v),
            "runtime" => yaml::from_node::<RuntimeConfig>(node).map(|v| config.runtime = v),
            "sources" => {
                parse_section(
                    node,
                    Section::Sources,
                    &mut config.sources,
                    SourceConfig::from_node,
                    &mut component_problems,
                    &mut broken,
                    &mk,
                );
                Ok(())
            }
            "stages" => {
                parse_section(
                    node,
                    Section::Stages,
                    &mut config.stages,
                    StageConfig::from_node,
                    &mut component_problems,
                    &mut broken,
                    &mk,
                );
                Ok(())
            }
            "sinks" => {
                parse_section(
                    node,
                    Section::Sinks,
                    &mut config.sinks,
                    SinkConfig::from_node,
                    &mut component_problems,
                    &mut broken,
                    &mk,
                );
                Ok(())
            }
            other => {
                let hint = yaml::suggest(other, TOP.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                Err(NodeError {
                    message: format!(
                        "unknown top-level key `{other}`, expected one of: {}{hint}",
                        TOP.join(", ")
                    ),
                    loc: key.loc.clone(),
                })
            }
        };
        if let Err(e) = r {
            problems.push(mk(e, None));
        }
    }
    if !saw_version {
        problems.push(mk(
            NodeError {
                message: format!("missing `version: {CONFIG_VERSION}`"),
                loc: Some(Loc::File { line: 1, column: 1 }),
            },
            None,
        ));
    } else if config.version != CONFIG_VERSION && problems.is_empty() {
        problems.push(mk(
            NodeError {
                message: format!(
                    "unsupported version {}: this build of tripline reads version {CONFIG_VERSION}",
                    config.version
                ),
                loc: root.get("version").and_then(|n| n.loc.clone()),
            },
            None,
        ));
    }
    if !problems.is_empty() {
        problems.extend(component_problems);
        return Err(Error::Config(problems));
    }
    let canonical = serde_json::to_vec(&root.to_json()).expect("JSON of a YAML tree");
    let config_hash = hex::encode(sha2::Sha256::digest(&canonical));
    Ok(LoadedConfig {
        config,
        file,
        root,
        config_hash,
        problems: component_problems,
        broken,
    })
}

fn parse_section<T>(
    node: &Node,
    section: Section,
    out: &mut BTreeMap<String, T>,
    parse: fn(&Node) -> std::result::Result<T, NodeError>,
    problems: &mut Vec<Problem>,
    broken: &mut Vec<(Section, String, Vec<String>)>,
    mk: &dyn Fn(NodeError, Option<String>) -> Problem,
) {
    match &node.value {
        Value::Null => {}
        Value::Map(entries) => {
            for (key, body) in entries {
                match parse(body) {
                    Ok(c) => {
                        out.insert(key.name.clone(), c);
                    }
                    Err(e) => {
                        problems.push(mk(
                            NodeError {
                                message: e.message,
                                loc: e.loc.or_else(|| key.loc.clone()),
                            },
                            Some(format!("{} `{}`", section.noun(), key.name)),
                        ));
                        let inputs = body
                            .get("inputs")
                            .and_then(|n| yaml::from_node::<Vec<String>>(n).ok())
                            .unwrap_or_default();
                        broken.push((section, key.name.clone(), inputs));
                    }
                }
            }
        }
        _ => problems.push(mk(
            NodeError {
                message: format!(
                    "`{}` must be a mapping of component name to {} settings",
                    section.key(),
                    section.noun()
                ),
                loc: node.loc.clone(),
            },
            None,
        )),
    }
}

/// The JSON Schema of pipeline files, as checked in at `schemas/pipeline.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(PipelineConfig);
    let mut s = serde_json::to_string_pretty(&schema).expect("schema serializes");
    s.push('\n');
    s
}
