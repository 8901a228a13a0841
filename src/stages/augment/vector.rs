//! Vector ops on one `f32` vector at a time (in place).

use super::config::AugmentOp;
use super::rng::OpRng;

#[derive(Debug, Clone)]
enum VecOp {
    Noise(f64),
    Dropout(f64, bool),
    Scale([f64; 2]),
    L2Normalize,
}

/// The ordered vector ops of one column.
#[derive(Debug, Clone)]
pub struct VectorPipeline {
    ops: Vec<(VecOp, f64)>,
}

impl VectorPipeline {
    /// Compiles `ops` (all vector ops).
    ///
    /// # Panics
    /// When an op is not a vector op (validation prevents it).
    pub fn new(ops: &[AugmentOp]) -> VectorPipeline {
        let ops = ops
            .iter()
            .map(|op| {
                let c = match op {
                    AugmentOp::GaussianNoise { sigma, .. } => VecOp::Noise(*sigma),
                    AugmentOp::Dropout { rate, rescale, .. } => VecOp::Dropout(*rate, *rescale),
                    AugmentOp::RandomScaling { scale, .. } => VecOp::Scale(*scale),
                    AugmentOp::L2Normalize { .. } => VecOp::L2Normalize,
                    other => panic!("`{}` is not a vector op", other.name()),
                };
                (c, op.p())
            })
            .collect();
        VectorPipeline { ops }
    }

    /// Applies every op to `v` in place for the record key `key`.
    pub fn apply(&self, v: &mut [f32], key: u64) {
        for (i, (op, p)) in self.ops.iter().enumerate() {
            let mut rng = OpRng::new(key, i);
            if !rng.chance(*p) {
                continue;
            }
            match op {
                VecOp::Noise(sigma) => {
                    for x in v.iter_mut() {
                        *x += (rng.normal() * sigma) as f32;
                    }
                }
                VecOp::Dropout(rate, rescale) => {
                    let keep_scale = if *rescale {
                        (1.0 / (1.0 - rate)) as f32
                    } else {
                        1.0
                    };
                    for x in v.iter_mut() {
                        if rng.chance(*rate) {
                            *x = 0.0;
                        } else {
                            *x *= keep_scale;
                        }
                    }
                }
                VecOp::Scale(range) => {
                    let f = rng.uniform(range[0], range[1]) as f32;
                    v.iter_mut().for_each(|x| *x *= f);
                }
                VecOp::L2Normalize => {
                    let norm = v
                        .iter()
                        .map(|x| (*x as f64) * (*x as f64))
                        .sum::<f64>()
                        .sqrt();
                    if norm > 0.0 {
                        let inv = (1.0 / norm) as f32;
                        v.iter_mut().for_each(|x| *x *= inv);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_has_configured_sigma() {
        let p = VectorPipeline::new(&[AugmentOp::GaussianNoise { sigma: 0.5, p: 1.0 }]);
        let mut v = vec![1.0f32; 50_000];
        p.apply(&mut v, 7);
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!((mean - 1.0).abs() < 0.01, "{mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.01, "{}", var.sqrt());
    }

    #[test]
    fn dropout_zeroes_within_binomial_bound_and_rescales() {
        let p = VectorPipeline::new(&[AugmentOp::Dropout {
            rate: 0.25,
            rescale: true,
            p: 1.0,
        }]);
        let mut v = vec![3.0f32; 40_000];
        p.apply(&mut v, 1);
        let zeros = v.iter().filter(|x| **x == 0.0).count() as f64;
        // sd = sqrt(40000·0.25·0.75) ≈ 86.6; 5 sd.
        assert!((zeros - 10_000.0).abs() < 433.0, "{zeros}");
        assert!(v.iter().all(|x| *x == 0.0 || *x == 4.0));
    }

    #[test]
    fn scaling_and_normalisation() {
        let p = VectorPipeline::new(&[
            AugmentOp::RandomScaling {
                scale: [2.0, 2.0],
                p: 1.0,
            },
            AugmentOp::L2Normalize { p: 1.0 },
        ]);
        let mut v = vec![3.0f32, 4.0];
        p.apply(&mut v, 0);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut z = vec![0.0f32; 4];
        p.apply(&mut z, 0);
        assert_eq!(z, vec![0.0; 4]);
    }
}
