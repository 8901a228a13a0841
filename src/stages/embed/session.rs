//! ONNX Runtime sessions: device selection, building, and running one model batch.
//!
//! `Session::run` takes `&mut self`, so every inference worker owns one session. Session
//! builder errors are not `Send`, so sessions are built in functions returning `ort::Result`
//! and the errors are turned into messages right there.

use std::borrow::Cow;
use std::path::Path;

use ort::ep::{self, ExecutionProvider};
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;

use super::ort_env;
use crate::error::{Error, Result};

/// Where inference should run, as configured by `device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA device 0 when it works, else the CPU (with one warning).
    Auto,
    /// The CPU.
    Cpu,
    /// This CUDA device; an error when it cannot be used.
    Cuda(i32),
}

impl DeviceChoice {
    /// Parses `auto`, `cpu`, `cuda` or `cuda:N`.
    ///
    /// # Errors
    /// A message listing the accepted values.
    pub fn parse(s: &str) -> std::result::Result<DeviceChoice, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<i32>().ok())
                .filter(|n| *n >= 0)
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    format!("unknown device `{s}`; expected auto, cpu, cuda or cuda:N (N ≥ 0)")
                }),
        }
    }
}

/// A session and where it actually runs.
#[derive(Debug)]
pub struct Runner {
    /// The ONNX Runtime session.
    pub session: Session,
    /// `CUDAExecutionProvider` or `CPUExecutionProvider`.
    pub provider: &'static str,
    /// `cuda:N` or `cpu`.
    pub device: String,
    /// With `device: auto`, why CUDA was not used.
    pub fallback: Option<String>,
}

fn commit(model: &Path, cuda: Option<i32>, threads: usize) -> ort::Result<Session> {
    let env = ort_env::environment().map_err(|e| ort::Error::new(e.to_string()))?;
    let mut builder = Session::builder(env)?
        .with_intra_threads(threads)?
        .with_inter_threads(1)?;
    if let Some(id) = cuda {
        builder = builder.with_execution_providers([ep::CUDA::default()
            .with_device_id(id)
            .build()
            .error_on_failure()])?;
    }
    builder.commit_from_file(model)
}

/// Most inference workers the defaults start (each holds its own copy of the model).
pub const MAX_DEFAULT_WORKERS: usize = 4;

/// Inference workers and intra-op threads per worker, from the configured values (either may
/// be unset) on a machine with `cores` cores.
///
/// On the CPU, several single-threaded sessions on different batches use the cores better
/// than one session splitting each batch across threads (no per-operator synchronisation;
/// small models spend much of their time in short element-wise operators): by default one
/// worker per core, at most [`MAX_DEFAULT_WORKERS`], the cores shared out among them. On a GPU
/// one session feeds the device. `auto` counts as the CPU when ONNX Runtime has no CUDA
/// execution provider.
pub fn parallelism(
    workers: Option<usize>,
    threads: Option<usize>,
    device: DeviceChoice,
    cores: usize,
) -> (usize, usize) {
    let cores = cores.max(1);
    let cpu = match device {
        DeviceChoice::Cpu => true,
        DeviceChoice::Cuda(_) => false,
        // The library must be located before any ONNX Runtime call.
        DeviceChoice::Auto => {
            ort_env::environment().is_err() || !matches!(ep::CUDA::is_available(), Ok(true))
        }
    };
    let (w, t) = match (workers, threads) {
        (Some(w), Some(t)) => (w, t),
        (Some(w), None) => (w, cores / w.max(1)),
        (None, Some(t)) if cpu => ((cores / t.max(1)).min(MAX_DEFAULT_WORKERS), t),
        (None, Some(t)) => (1, t),
        (None, None) if cpu => {
            let w = cores.min(MAX_DEFAULT_WORKERS);
            (w, cores / w)
        }
        (None, None) => (1, cores),
    };
    (w.max(1), t.max(1))
}

/// Builds a session for `model` on `device` with `threads` intra-op threads.
///
/// # Errors
/// When ONNX Runtime cannot be loaded, the model cannot be loaded, or a `cuda` device was
/// asked for and cannot be used.
pub fn build(model: &Path, device: DeviceChoice, threads: usize) -> Result<Runner> {
    ort_env::environment()?;
    let cpu = |fallback: Option<String>| -> Result<Runner> {
        let session = commit(model, None, threads).map_err(|e| load_error(model, &e))?;
        Ok(Runner {
            session,
            provider: "CPUExecutionProvider",
            device: "cpu".into(),
            fallback,
        })
    };
    let cuda = |id: i32| -> std::result::Result<Session, String> {
        match ep::CUDA::is_available() {
            Ok(true) => {}
            _ => {
                return Err(format!(
                    "the ONNX Runtime library at `{}` has no CUDA execution provider (install \
                     onnxruntime-gpu: scripts/install-onnxruntime.sh --gpu)",
                    ort_env::library_path().map_or("?".into(), |p| p.display().to_string())
                ));
            }
        }
        commit(model, Some(id), threads).map_err(|e| e.to_string())
    };
    match device {
        DeviceChoice::Cpu => cpu(None),
        DeviceChoice::Cuda(id) => match cuda(id) {
            Ok(session) => Ok(Runner {
                session,
                provider: "CUDAExecutionProvider",
                device: format!("cuda:{id}"),
                fallback: None,
            }),
            Err(e) => Err(Error::Other(format!(
                "device cuda:{id} was asked for but cannot be used: {e}"
            ))),
        },
        DeviceChoice::Auto => match cuda(0) {
            Ok(session) => Ok(Runner {
                session,
                provider: "CUDAExecutionProvider",
                device: "cuda:0".into(),
                fallback: None,
            }),
            Err(e) => cpu(Some(e)),
        },
    }
}

fn load_error(model: &Path, e: &ort::Error) -> Error {
    Error::Other(format!(
        "ONNX Runtime cannot load model `{}`: {e}",
        model.display()
    ))
}

/// One input tensor for a run.
#[derive(Debug)]
pub enum InputData {
    /// 64-bit integers.
    I64(Vec<i64>),
    /// 32-bit integers.
    I32(Vec<i32>),
    /// 32-bit floats.
    F32(Vec<f32>),
}

/// Runs `runner` on named inputs of the given shapes and hands the output `output` (shape and
/// values, borrowed from ONNX Runtime) to `f`.
///
/// # Errors
/// ONNX Runtime's message when the run fails, or when the output is not a float32 tensor.
pub fn run<R>(
    runner: &mut Runner,
    inputs: Vec<(String, Vec<i64>, InputData)>,
    output: &str,
    f: impl FnOnce(&[i64], &[f32]) -> R,
) -> std::result::Result<R, String> {
    let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
    for (name, shape, data) in inputs {
        let v: SessionInputValue<'_> = match data {
            InputData::I64(d) => Tensor::from_array((shape, d))
                .map_err(|e| e.to_string())?
                .into(),
            InputData::I32(d) => Tensor::from_array((shape, d))
                .map_err(|e| e.to_string())?
                .into(),
            InputData::F32(d) => Tensor::from_array((shape, d))
                .map_err(|e| e.to_string())?
                .into(),
        };
        values.push((Cow::Owned(name), v));
    }
    let outputs = runner
        .session
        .run(values)
        .map_err(|e| format!("inference failed: {e}"))?;
    let value = outputs
        .get(output)
        .ok_or_else(|| format!("the model produced no output `{output}`"))?;
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|e| format!("output `{output}` is not a float32 tensor: {e}"))?;
    Ok(f(shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_defaults_to_single_threaded_workers_and_gpu_to_one_session() {
        let cpu = DeviceChoice::Cpu;
        assert_eq!(parallelism(None, None, cpu, 2), (2, 1));
        assert_eq!(parallelism(None, None, cpu, 16), (4, 4));
        assert_eq!(parallelism(None, None, cpu, 1), (1, 1));
        assert_eq!(parallelism(Some(1), None, cpu, 8), (1, 8));
        assert_eq!(parallelism(None, Some(2), cpu, 8), (4, 2));
        assert_eq!(parallelism(None, Some(3), cpu, 2), (1, 3));
        assert_eq!(parallelism(Some(3), Some(5), cpu, 2), (3, 5));
        let gpu = DeviceChoice::Cuda(0);
        assert_eq!(parallelism(None, None, gpu, 16), (1, 16));
        assert_eq!(parallelism(None, Some(2), gpu, 16), (1, 2));
    }

    #[test]
    fn device_names() {
        assert_eq!(DeviceChoice::parse("auto"), Ok(DeviceChoice::Auto));
        assert_eq!(DeviceChoice::parse("cpu"), Ok(DeviceChoice::Cpu));
        assert_eq!(DeviceChoice::parse("cuda"), Ok(DeviceChoice::Cuda(0)));
        assert_eq!(DeviceChoice::parse("cuda:3"), Ok(DeviceChoice::Cuda(3)));
        for bad in ["gpu", "cuda:", "cuda:-1", "cuda:x", "CPU"] {
            assert!(
                DeviceChoice::parse(bad)
                    .unwrap_err()
                    .contains("expected auto, cpu")
            );
        }
    }
}
