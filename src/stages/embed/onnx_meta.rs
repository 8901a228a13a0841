//! Reading a model's signature (graph inputs and outputs) straight from the ONNX file.
//!
//! Validation needs the model's input names and the dimension it produces before anything
//! runs, without loading ONNX Runtime. An ONNX file is a protobuf `ModelProto`; only the few
//! fields that describe the graph's inputs and outputs are decoded here (protobuf skips every
//! other field, including the weights, without copying them).

use std::path::Path;

use prost::Message;

/// Element types (`TensorProto.DataType`) the stage deals with.
pub(crate) const ELEM_FLOAT: i32 = 1;
/// `uint8`.
pub(crate) const ELEM_UINT8: i32 = 2;
/// `int32`.
pub(crate) const ELEM_INT32: i32 = 6;
/// `int64`.
pub(crate) const ELEM_INT64: i32 = 7;

/// The ONNX name of an element type.
pub(crate) fn elem_name(t: i32) -> &'static str {
    match t {
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        9 => "bool",
        10 => "float16",
        11 => "float64",
        16 => "bfloat16",
        8 => "string",
        _ => "an unsupported type",
    }
}

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(int64, optional, tag = "1")]
    ir_version: Option<i64>,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<NamedTensor>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

/// A `TensorProto` of which only the name is read (initializers listed as inputs are weights,
/// not inputs the caller feeds).
#[derive(Clone, PartialEq, Message)]
struct NamedTensor {
    #[prost(string, optional, tag = "8")]
    name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    /// Member of the `value` oneof; on the wire a oneof member is an ordinary field.
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorTypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorTypeProto {
    #[prost(int32, optional, tag = "1")]
    elem_type: Option<i32>,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<DimensionProto>,
}

#[derive(Clone, PartialEq, Message)]
struct DimensionProto {
    #[prost(int64, optional, tag = "1")]
    dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    dim_param: Option<String>,
}

/// One graph input or output.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorInfo {
    /// Its name.
    pub name: String,
    /// ONNX element type (see [`elem_name`]); 0 when not a tensor.
    pub elem: i32,
    /// Dimensions; `None` for a symbolic or unknown one. `None` overall when the rank is unknown.
    pub shape: Option<Vec<Option<i64>>>,
}

impl TensorInfo {
    /// The rank, when known.
    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }

    /// `[batch, 3, 224, 224]`-style description.
    pub fn describe(&self) -> String {
        let dims = match &self.shape {
            None => "?".to_string(),
            Some(s) => s
                .iter()
                .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        };
        format!("`{}` {} [{dims}]", self.name, elem_name(self.elem))
    }
}

/// The inputs the caller feeds and the outputs a model produces.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ModelSignature {
    /// Graph inputs that are not initializers, in order.
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs, in order.
    pub outputs: Vec<TensorInfo>,
}

impl ModelSignature {
    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&TensorInfo> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<&TensorInfo> {
        self.outputs.iter().find(|i| i.name == name)
    }
}

fn info(v: ValueInfoProto) -> TensorInfo {
    let tensor = v.r#type.and_then(|t| t.tensor_type);
    TensorInfo {
        name: v.name.unwrap_or_default(),
        elem: tensor.as_ref().and_then(|t| t.elem_type).unwrap_or(0),
        shape: tensor.and_then(|t| t.shape).map(|s| {
            s.dim
                .into_iter()
                .map(|d| d.dim_value.filter(|v| *v > 0))
                .collect()
        }),
    }
}

/// Reads the signature of the ONNX model at `path`.
///
/// # Errors
/// A message naming the file when it cannot be read or is not an ONNX model.
pub(crate) fn read_signature(path: &Path) -> Result<ModelSignature, String> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("model file `{}` does not exist", path.display())
        } else {
            format!("cannot read model file `{}`: {e}", path.display())
        }
    })?;
    let not_a_model = |why: &str| {
        format!(
            "`{}` is not an ONNX model ({why}); expected a `.onnx` file such as one exported with \
             optimum or torch.onnx",
            path.display()
        )
    };
    let model = ModelProto::decode(bytes.as_slice()).map_err(|e| not_a_model(&e.to_string()))?;
    let graph = match (model.ir_version, model.graph) {
        (Some(v), Some(g)) if v > 0 => g,
        _ => return Err(not_a_model("no graph")),
    };
    let weights: std::collections::HashSet<String> = graph
        .initializer
        .into_iter()
        .filter_map(|t| t.name)
        .collect();
    let inputs: Vec<TensorInfo> = graph
        .input
        .into_iter()
        .map(info)
        .filter(|i| !weights.contains(&i.name))
        .collect();
    let outputs: Vec<TensorInfo> = graph.output.into_iter().map(info).collect();
    if outputs.is_empty() || outputs.iter().any(|o| o.name.is_empty()) {
        return Err(not_a_model("its graph declares no named outputs"));
    }
    Ok(ModelSignature { inputs, outputs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/embed")
            .join(name)
    }

    #[test]
    fn reads_inputs_outputs_and_shapes() {
        let s = read_signature(&data("tiny_text.onnx")).unwrap();
        let names: Vec<&str> = s.inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["input_ids", "attention_mask", "token_type_ids"]);
        assert_eq!(s.inputs[0].elem, ELEM_INT64);
        assert_eq!(s.inputs[0].shape, Some(vec![None, None]));
        let out = s.output("last_hidden_state").unwrap();
        assert_eq!(out.elem, ELEM_FLOAT);
        assert_eq!(out.shape, Some(vec![None, None, Some(4)]));
        assert_eq!(out.describe(), "`last_hidden_state` float32 [?, ?, 4]");
        // Weights are not inputs.
        let v = read_signature(&data("tiny_vector.onnx")).unwrap();
        assert_eq!(v.inputs.len(), 1);
        assert_eq!(v.inputs[0].shape, Some(vec![None, Some(3)]));
    }

    #[test]
    fn rejects_files_that_are_not_models() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.onnx");
        std::fs::write(&p, b"\x08\x07").unwrap();
        let e = read_signature(&p).unwrap_err();
        assert!(e.contains("is not an ONNX model"), "{e}");
        std::fs::write(&p, "plain text, not protobuf").unwrap();
        assert!(
            read_signature(&p)
                .unwrap_err()
                .contains("is not an ONNX model")
        );
        let e = read_signature(&dir.path().join("missing.onnx")).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
    }
}
