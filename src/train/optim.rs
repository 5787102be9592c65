//! AdamW with f32 moments, global-norm gradient clipping, and the warmup + cosine schedule.
//!
//! [`AdamW::step`] applies one update to every trainable tensor from its (accumulated) gradient:
//! the gradients are first scaled so their global L2 norm is at most `max_grad_norm` (the norm
//! before clipping is returned, as trainers log it), then `m ← β₁m + (1−β₁)g`,
//! `v ← β₂v + (1−β₂)g²`, `θ ← θ − lr·(m̂/(√v̂ + ε) + λθ)` with bias-corrected `m̂`, `v̂` (decoupled
//! weight decay; PyTorch's `AdamW` formula). The moments are kept in f32 whatever the weights' type and
//! are part of a checkpoint ([`AdamW::moments`], [`AdamW::restore`]).
//!
//! [`Schedule`] is Hugging Face's `cosine` schedule with linear warmup: the learning rate rises
//! linearly over the warmup steps, then follows a half cosine down to `min_lr_ratio · lr`.

use std::collections::HashMap;

use candle_core::{DType, Result, Tensor, Var};

/// AdamW's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Gradients are scaled down so their global norm is at most this (0: no clipping).
    pub max_grad_norm: f64,
}

/// The optimizer's state for a list of named tensors.
pub struct AdamW {
    config: AdamWConfig,
    /// First and second moments per tensor, in the order of `names`.
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    names: Vec<String>,
    shapes: Vec<candle_core::Shape>,
    /// Updates applied so far.
    t: u64,
}

impl AdamW {
    /// Zero moments for `params`.
    pub fn new(params: &[(String, Var)], config: AdamWConfig) -> Result<Self> {
        Ok(AdamW {
            config,
            m: params
                .iter()
                .map(|(_, v)| vec![0f32; v.elem_count()])
                .collect(),
            v: params
                .iter()
                .map(|(_, v)| vec![0f32; v.elem_count()])
                .collect(),
            names: params.iter().map(|(n, _)| n.clone()).collect(),
            shapes: params.iter().map(|(_, v)| v.shape().clone()).collect(),
            t: 0,
        })
    }

    /// One update of `params` (the list given to [`AdamW::new`]) with `grads` (same order, as
    /// f32) at learning rate `lr`. Returns the gradients' global norm before clipping.
    ///
    /// The update is one fused pass per tensor over its values, moments and gradient, split
    /// over rayon in fixed chunks (bitwise reproducible for any thread count).
    pub fn step(&mut self, params: &[(String, Var)], grads: Vec<Tensor>, lr: f64) -> Result<f64> {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 16;
        let c = self.config;
        let mut square_sum = 0f64;
        for g in &grads {
            square_sum += with_f32(g, |g| {
                g.par_chunks(CHUNK)
                    .map(|c| c.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
                    .collect::<Vec<f64>>()
                    .into_iter()
                    .sum::<f64>()
            })?;
        }
        let norm = square_sum.sqrt();
        let clip = if c.max_grad_norm > 0.0 && norm > c.max_grad_norm {
            c.max_grad_norm / (norm + 1e-6)
        } else {
            1.0
        };
        self.t += 1;
        let t = self.t as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        let (b1, b2, eps, wd) = (
            c.beta1 as f32,
            c.beta2 as f32,
            c.eps as f32,
            c.weight_decay as f32,
        );
        let (step_size, bc2_sqrt) = ((lr / bc1) as f32, bc2.sqrt() as f32);
        let (lr32, clip32) = (lr as f32, clip as f32);
        for (i, ((_, param), g)) in params.iter().zip(grads).enumerate() {
            let mut theta = param
                .flatten_all()?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?;
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            with_f32(&g, |g| {
                theta
                    .par_chunks_mut(CHUNK)
                    .zip(m.par_chunks_mut(CHUNK))
                    .zip(v.par_chunks_mut(CHUNK))
                    .zip(g.par_chunks(CHUNK))
                    .for_each(|(((theta, m), v), g)| {
                        for j in 0..theta.len() {
                            let g = g[j] * clip32;
                            m[j] = b1 * m[j] + (1.0 - b1) * g;
                            v[j] = b2 * v[j] + (1.0 - b2) * g * g;
                            let denom = v[j].sqrt() / bc2_sqrt + eps;
                            theta[j] -= step_size * m[j] / denom + lr32 * wd * theta[j];
                        }
                    })
            })?;
            drop(g);
            let next = Tensor::from_vec(theta, param.shape(), param.device())?;
            param.set(&next.to_dtype(param.dtype())?)?;
        }
        Ok(norm)
    }

    /// Updates applied so far.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// The moments by name (`<param>.exp_avg`, `<param>.exp_avg_sq`), for a checkpoint.
    pub fn moments(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (i, name) in self.names.iter().enumerate() {
            let shape = self.shapes[i].clone();
            out.insert(
                format!("{name}.exp_avg"),
                Tensor::from_slice(&self.m[i], shape.clone(), &candle_core::Device::Cpu)?,
            );
            out.insert(
                format!("{name}.exp_avg_sq"),
                Tensor::from_slice(&self.v[i], shape, &candle_core::Device::Cpu)?,
            );
        }
        Ok(out)
    }

    /// Restores moments written by [`AdamW::moments`] and the update count.
    pub fn restore(
        &mut self,
        moments: &HashMap<String, Tensor>,
        steps: u64,
    ) -> std::result::Result<(), String> {
        for (i, name) in self.names.iter().enumerate() {
            for (key, slot) in [("exp_avg", &mut self.m[i]), ("exp_avg_sq", &mut self.v[i])] {
                let full = format!("{name}.{key}");
                let t = moments
                    .get(&full)
                    .ok_or_else(|| format!("optimizer state `{full}` is missing"))?;
                if t.shape() != &self.shapes[i] || t.dtype() != DType::F32 {
                    return Err(format!(
                        "optimizer state `{full}` is {:?} {:?}, the model needs f32 {:?}",
                        t.dtype(),
                        t.dims(),
                        self.shapes[i].dims()
                    ));
                }
                *slot = t
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(|e| e.to_string())?;
            }
        }
        self.t = steps;
        Ok(())
    }
}

/// Runs `f` on the values of an f32 tensor: in place for a contiguous CPU tensor, on a copy
/// otherwise (another dtype or device).
fn with_f32<T>(t: &Tensor, f: impl FnOnce(&[f32]) -> T) -> Result<T> {
    if t.dtype() == DType::F32 && t.device().is_cpu() {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(cpu), Some((a, b))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(f(&cpu.as_slice::<f32>()?[a..b]));
        }
    }
    let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(f(&values))
}

/// Learning rate per optimizer step: linear warmup, then cosine decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub peak: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    /// The floor the cosine decays to, as a share of `peak`.
    pub min_lr_ratio: f64,
}

impl Schedule {
    /// The learning rate of step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.peak * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        let s = Schedule {
            peak: 1.0,
            warmup_steps: 4,
            total_steps: 14,
            min_lr_ratio: 0.1,
        };
        assert_eq!(s.lr(0), 0.25);
        assert_eq!(s.lr(3), 1.0);
        assert_eq!(s.lr(4), 1.0);
        assert!((s.lr(9) - 0.55).abs() < 1e-12);
        assert!((s.lr(13) - 0.1).abs() < 0.03 && s.lr(13) > 0.1);
        assert!((1..14).all(|i| i <= 4 || s.lr(i) < s.lr(i - 1)));
    }

    /// One update by hand: θ = 1, g = 3 (clipped to norm 1.5 → 1.5), lr 0.1, no decay:
    /// m̂ = g, v̂ = g², so θ moves by lr·g/(|g| + ε) = 0.1.
    #[test]
    fn first_update_matches_the_formula_and_clips() {
        let p = Var::new(&[1f32, -2.0], &Device::Cpu).unwrap();
        let params = vec![("p".to_string(), p.clone())];
        let mut opt = AdamW::new(
            &params,
            AdamWConfig {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
                max_grad_norm: 1.5,
            },
        )
        .unwrap();
        let g = Tensor::new(&[3f32, 0.0], &Device::Cpu).unwrap();
        let norm = opt.step(&params, vec![g], 0.1).unwrap();
        assert_eq!(norm, 3.0);
        let v = p.as_tensor().to_vec1::<f32>().unwrap();
        assert!((v[0] - 0.9).abs() < 1e-6, "{v:?}");
        assert_eq!(v[1], -2.0);
        let m = opt.moments().unwrap()["p.exp_avg"]
            .to_vec1::<f32>()
            .unwrap()[0];
        let expected = 0.1 * 3.0 * (1.5 / (3.0 + 1e-6));
        assert!((f64::from(m) - expected).abs() < 1e-6, "{m}");
    }
}
