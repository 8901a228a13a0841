//! What the stage will do, worked out from the configuration, the input schema and the
//! model's signature before anything runs.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::EMBEDDING_SUFFIX;
use super::EmbedStageConfig;
use super::image::Layout;
use super::onnx_meta::{
    ELEM_FLOAT, ELEM_INT32, ELEM_INT64, ELEM_UINT8, ModelSignature, TensorInfo, read_signature,
};
use super::pooling::Pooling;
use super::session::DeviceChoice;
use super::text::TextEncoder;
use crate::sources::PlanProblem;

/// Integer element type of a text input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntType {
    I64,
    I32,
}

/// One integer input of a text model.
#[derive(Debug, Clone)]
pub(crate) struct IntInput {
    pub name: String,
    pub ty: IntType,
}

/// How text reaches the model.
#[derive(Debug, Clone)]
pub(crate) struct TextInputs {
    pub ids: IntInput,
    pub mask: Option<IntInput>,
    pub type_ids: Option<IntInput>,
}

/// How images and vectors reach the model: its one float input.
#[derive(Debug, Clone)]
pub(crate) struct DenseInput {
    pub name: String,
    /// Shape without the batch axis.
    pub tail: Vec<usize>,
    /// For images: channel order, height and width.
    pub image: Option<(Layout, u32, u32)>,
}

impl DenseInput {
    /// Floats per row.
    pub fn elems(&self) -> usize {
        self.tail.iter().product()
    }
}

/// What an input column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    Text,
    Image,
    /// Float vector or tensor; `Some(n)` for a fixed-size list of `n`.
    Dense(Option<usize>),
}

/// One embedded column.
#[derive(Debug, Clone)]
pub(crate) struct ColumnPlan {
    pub name: String,
    pub kind: ColumnKind,
    /// Index of the input column.
    pub input_index: usize,
    /// Index of an existing `<name>_embedding` input column to reuse values from.
    pub reuse_index: Option<usize>,
}

/// Everything the stage needs to run, computed once.
#[derive(Debug, Clone)]
pub(crate) struct StagePlan {
    pub output_schema: SchemaRef,
    pub columns: Vec<ColumnPlan>,
    pub dim: usize,
    pub output: String,
    /// Whether the output has a token axis (`[batch, tokens, dim]`).
    pub output_has_tokens: bool,
    pub text: Option<TextInputs>,
    pub dense: Option<DenseInput>,
    pub encoder: Option<TextEncoder>,
    pub device: DeviceChoice,
}

fn key(k: &str) -> Vec<String> {
    vec![k.to_string()]
}

fn key2(k: &str, i: usize) -> Vec<String> {
    vec![k.to_string(), i.to_string()]
}

fn int_input(t: &TensorInfo, problems: &mut Vec<PlanProblem>) -> Option<IntInput> {
    let ty = match t.elem {
        ELEM_INT64 => IntType::I64,
        ELEM_INT32 => IntType::I32,
        _ => {
            problems.push((
                key("model"),
                format!(
                    "model input {} should be int64 or int32 token ids",
                    t.describe()
                ),
            ));
            return None;
        }
    };
    if t.rank().is_some_and(|r| r != 2) {
        problems.push((
            key("model"),
            format!(
                "model input {} should have shape [batch, tokens]",
                t.describe()
            ),
        ));
        return None;
    }
    Some(IntInput {
        name: t.name.clone(),
        ty,
    })
}

/// The embedding column type for dimension `dim`.
pub(crate) fn embedding_type(dim: usize) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float32, false)),
        dim as i32,
    )
}

fn kind_of(t: &DataType) -> Option<ColumnKind> {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(ColumnKind::Text),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Some(ColumnKind::Image),
        DataType::FixedSizeList(f, n) if f.data_type() == &DataType::Float32 => {
            Some(ColumnKind::Dense(Some(*n as usize)))
        }
        DataType::List(f) | DataType::LargeList(f) if f.data_type() == &DataType::Float32 => {
            Some(ColumnKind::Dense(None))
        }
        _ => None,
    }
}

/// Works out the plan, or every problem that prevents it.
pub(crate) fn analyse(
    cfg: &EmbedStageConfig,
    input: &SchemaRef,
) -> Result<StagePlan, Vec<PlanProblem>> {
    let mut problems: Vec<PlanProblem> = Vec::new();
    let device = DeviceChoice::parse(&cfg.device)
        .map_err(|e| problems.push((key("device"), e)))
        .unwrap_or(DeviceChoice::Cpu);
    if cfg.batch_size == 0 {
        problems.push((key("batch_size"), "must be at least 1".into()));
    }
    if cfg.workers == Some(0) {
        problems.push((key("workers"), "must be at least 1".into()));
    }
    if cfg.threads == Some(0) {
        problems.push((key("threads"), "must be at least 1".into()));
    }
    if cfg.max_length == Some(0) {
        problems.push((key("max_length"), "must be at least 1".into()));
    }
    if let Some(l) = cfg.lookahead_rows
        && l < cfg.batch_size
    {
        problems.push((
            key("lookahead_rows"),
            format!("must be at least batch_size ({})", cfg.batch_size),
        ));
    }
    if cfg.image.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
        problems.push((
            vec!["image".into(), "std".into()],
            "every value must be finite and non-zero".into(),
        ));
    }
    if cfg.columns.is_empty() {
        problems.push((key("columns"), "name at least one column to embed".into()));
    }

    // Columns.
    let mut kinds: Vec<Option<(usize, ColumnKind)>> = Vec::new();
    for (i, c) in cfg.columns.iter().enumerate() {
        if cfg.columns[..i].contains(c) {
            problems.push((key2("columns", i), format!("column `{c}` is listed twice")));
            kinds.push(None);
            continue;
        }
        super::super::require_column(
            input,
            c,
            key2("columns", i),
            "text (Utf8), encoded images (Binary) or float vectors (FixedSizeList<Float32> or \
             List<Float32>)",
            |t| kind_of(t).is_some(),
            &mut problems,
        );
        let kind = input
            .index_of(c)
            .ok()
            .and_then(|j| kind_of(input.field(j).data_type()).map(|k| (j, k)));
        kinds.push(kind);
    }
    let any_text = kinds.iter().flatten().any(|(_, k)| *k == ColumnKind::Text);
    let any_image = kinds.iter().flatten().any(|(_, k)| *k == ColumnKind::Image);
    let any_dense = kinds
        .iter()
        .flatten()
        .any(|(_, k)| matches!(k, ColumnKind::Dense(_)));

    // Tokenizer.
    let mut encoder = None;
    match (&cfg.tokenizer, any_text) {
        (Some(t), true) => match TextEncoder::load(Path::new(t), cfg.max_length) {
            Ok(e) => encoder = Some(e),
            Err(e) => problems.push((key("tokenizer"), e)),
        },
        (None, true) => problems.push((
            vec![],
            "a text column needs `tokenizer:` (the model's tokenizer.json)".into(),
        )),
        _ => {}
    }

    // Model.
    let sig = match read_signature(Path::new(&cfg.model)) {
        Ok(s) => Some(s),
        Err(mut e) => {
            if !Path::new(&cfg.model).exists() {
                e.push_str(
                    " (for the quickstart model all-MiniLM-L6-v2, run scripts/fetch-model.sh)",
                );
            }
            problems.push((key("model"), e));
            None
        }
    };
    let mut text = None;
    let mut dense = None;
    let mut output = String::new();
    let mut dim = cfg.dim.unwrap_or(0);
    let mut output_has_tokens = false;
    if let Some(sig) = &sig {
        if any_text && (any_image || any_dense) {
            problems.push((
                key("columns"),
                "text and image/vector columns cannot share one model; use two embed stages".into(),
            ));
        } else if any_text {
            text = text_inputs(sig, &mut problems);
        } else if any_image || any_dense {
            dense = dense_input(sig, any_image, &mut problems);
        }
        if let Some(d) = &dense {
            for (i, k) in kinds.iter().enumerate() {
                if let Some((_, ColumnKind::Dense(Some(n)))) = k
                    && *n != d.elems()
                {
                    problems.push((
                        key2("columns", i),
                        format!(
                            "column `{}` holds {n} floats per row, but model input `{}` takes \
                             {} ({:?} per row)",
                            cfg.columns[i],
                            d.name,
                            d.elems(),
                            d.tail
                        ),
                    ));
                }
            }
        }
        // Output.
        let out = match &cfg.output {
            Some(o) => sig.output(o).or_else(|| {
                problems.push((
                    key("output"),
                    format!(
                        "the model has no output `{o}`; it has: {}",
                        sig.outputs
                            .iter()
                            .map(|o| o.describe())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
                None
            }),
            None => sig.outputs.first(),
        };
        if let Some(out) = out {
            output = out.name.clone();
            if out.elem != ELEM_FLOAT {
                problems.push((
                    key("output"),
                    format!("model output {} should be float32", out.describe()),
                ));
            }
            let want_rank = if cfg.pooling == Pooling::None { 2 } else { 3 };
            output_has_tokens = want_rank == 3;
            match out.rank() {
                Some(r) if r != want_rank => problems.push((
                    key("pooling"),
                    format!(
                        "pooling `{}` needs a model output of shape {}, but {} has rank {r}{}",
                        serde_json::to_value(cfg.pooling)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        if want_rank == 3 {
                            "[batch, tokens, dim]"
                        } else {
                            "[batch, dim]"
                        },
                        out.describe(),
                        if r == 2 {
                            "; the model already pools: use `pooling: none`"
                        } else {
                            ""
                        }
                    ),
                )),
                _ => {}
            }
            let model_dim = out
                .shape
                .as_ref()
                .and_then(|s| s.last().copied().flatten())
                .map(|d| d as usize);
            match (model_dim, cfg.dim) {
                (Some(m), Some(c)) if m != c => problems.push((
                    key("dim"),
                    format!("is {c}, but model output {} gives {m}", out.describe()),
                )),
                (Some(m), _) => dim = m,
                (None, Some(c)) => dim = c,
                (None, None) => problems.push((
                    vec![],
                    format!(
                        "the model output {} does not state its dimension; set `dim:`",
                        out.describe()
                    ),
                )),
            }
        }
    }
    if cfg.dim == Some(0) {
        problems.push((key("dim"), "must be at least 1".into()));
    }

    // Output schema.
    let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
    let mut columns = Vec::new();
    for (i, c) in cfg.columns.iter().enumerate() {
        let Some((input_index, kind)) = kinds[i] else {
            continue;
        };
        let out_name = format!("{c}{EMBEDDING_SUFFIX}");
        let field = Arc::new(Field::new(&out_name, embedding_type(dim.max(1)), false));
        let reuse_index = match input.index_of(&out_name) {
            Ok(j) => {
                let t = input.field(j).data_type();
                let ok_type = matches!(kind_of(t), Some(ColumnKind::Dense(n)) if n.is_none() || n == Some(dim));
                if !cfg.reuse_existing {
                    problems.push((
                        key2("columns", i),
                        format!(
                            "the input already has a column `{out_name}`; set `reuse_existing: \
                             true` to keep its valid values, or rename it"
                        ),
                    ));
                } else if !ok_type {
                    problems.push((
                        key("reuse_existing"),
                        format!(
                            "column `{out_name}` is {t}, expected FixedSizeList<Float32, {dim}> \
                             or List<Float32> to reuse"
                        ),
                    ));
                }
                fields[j] = field;
                Some(j)
            }
            Err(_) => {
                fields.push(field);
                None
            }
        };
        columns.push(ColumnPlan {
            name: c.clone(),
            kind,
            input_index,
            reuse_index,
        });
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(StagePlan {
        output_schema: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
        columns,
        dim,
        output,
        output_has_tokens,
        text,
        dense,
        encoder,
        device,
    })
}

fn text_inputs(sig: &ModelSignature, problems: &mut Vec<PlanProblem>) -> Option<TextInputs> {
    let Some(ids) = sig.input("input_ids") else {
        problems.push((
            key("model"),
            format!(
                "a text model must take `input_ids`; this one takes: {}",
                describe_all(&sig.inputs)
            ),
        ));
        return None;
    };
    for i in &sig.inputs {
        if !matches!(
            i.name.as_str(),
            "input_ids" | "attention_mask" | "token_type_ids"
        ) {
            problems.push((
                key("model"),
                format!(
                    "model input {} is not one the embed stage can feed (it feeds input_ids, \
                     attention_mask, token_type_ids)",
                    i.describe()
                ),
            ));
        }
    }
    let n = problems.len();
    let ids = int_input(ids, problems);
    let mask = sig
        .input("attention_mask")
        .and_then(|t| int_input(t, problems));
    let type_ids = sig
        .input("token_type_ids")
        .and_then(|t| int_input(t, problems));
    if problems.len() > n {
        return None;
    }
    Some(TextInputs {
        ids: ids?,
        mask,
        type_ids,
    })
}

fn describe_all(v: &[TensorInfo]) -> String {
    v.iter()
        .map(|t| t.describe())
        .collect::<Vec<_>>()
        .join(", ")
}

fn dense_input(
    sig: &ModelSignature,
    image: bool,
    problems: &mut Vec<PlanProblem>,
) -> Option<DenseInput> {
    let [input] = sig.inputs.as_slice() else {
        problems.push((
            key("model"),
            format!(
                "an image or vector model must take exactly one float input; this one takes: {}",
                describe_all(&sig.inputs)
            ),
        ));
        return None;
    };
    if input.elem != ELEM_FLOAT {
        let hint = if input.elem == ELEM_UINT8 {
            " (models taking raw uint8 pixels are not supported)"
        } else {
            ""
        };
        problems.push((
            key("model"),
            format!("model input {} should be float32{hint}", input.describe()),
        ));
        return None;
    }
    let Some(shape) = &input.shape else {
        problems.push((
            key("model"),
            format!("model input {} does not state its shape", input.describe()),
        ));
        return None;
    };
    if shape.len() < 2 {
        problems.push((
            key("model"),
            format!(
                "model input {} should have a batch axis and at least one more",
                input.describe()
            ),
        ));
        return None;
    }
    if image {
        if shape.len() != 4 {
            problems.push((
                key("model"),
                format!(
                    "an image model input should be [batch, 3, height, width] or [batch, \
                     height, width, 3]; {} is not",
                    input.describe()
                ),
            ));
            return None;
        }
        let d = |i: usize| shape[i].map(|v| v as u32);
        let (layout, h, w) = if d(1) == Some(3) {
            (Layout::Nchw, d(2), d(3))
        } else if d(3) == Some(3) {
            (Layout::Nhwc, d(1), d(2))
        } else {
            problems.push((
                key("model"),
                format!(
                    "cannot tell the channel axis of image input {} (expected 3 channels at axis \
                     1 or 3)",
                    input.describe()
                ),
            ));
            return None;
        };
        let (h, w) = (h.unwrap_or(224), w.unwrap_or(224));
        let tail = match layout {
            Layout::Nchw => vec![3, h as usize, w as usize],
            Layout::Nhwc => vec![h as usize, w as usize, 3],
        };
        return Some(DenseInput {
            name: input.name.clone(),
            tail,
            image: Some((layout, h, w)),
        });
    }
    let mut tail = Vec::new();
    for d in &shape[1..] {
        match d {
            Some(v) => tail.push(*v as usize),
            None => {
                problems.push((
                    key("model"),
                    format!(
                        "model input {} has a dynamic axis besides the batch; vectors need a \
                         fixed shape",
                        input.describe()
                    ),
                ));
                return None;
            }
        }
    }
    Some(DenseInput {
        name: input.name.clone(),
        tail,
        image: None,
    })
}
