//! Linear layers with optional LoRA adapters (Hu et al. 2021), initialized as PEFT does.
//!
//! `y = x·Wᵀ + b + (α/r)·(x·Aᵀ)·Bᵀ` with `A` `(r, in)` drawn from PEFT's default
//! `kaiming_uniform_(a=√5)` — uniform in `±1/√in` — and `B` `(out, r)` zero, so an adapted model
//! starts exactly equal to its base. Adapters are named like PEFT's (`…q_proj.lora_A.weight`,
//! `…q_proj.lora_B.weight`). [`LoraLinear::merged_weight`] folds the adapter into `W` for saving
//! (`W + (α/r)·B·A`); the tests check the merged layer computes what the adapted one does.
//!
//! The projection `x·Wᵀ` is [`Projection`], a custom op whose backward computes `∂x` always and
//! `∂W` only when `W` trains: candle's own matmul backward computes both, which under LoRA (and
//! for every frozen weight) is a full weight-sized matmul per layer thrown away.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Device, Layout, Result, Shape, Tensor, Var};
use serde::{Deserialize, Serialize};

/// LoRA settings (`[train.lora]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// The adapters' rank r.
    #[serde(default = "default_rank")]
    pub rank: usize,
    /// The scale numerator α (the update is scaled by α / r).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Projections that get adapters, by their Hugging Face module name.
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: default_rank(),
            alpha: default_alpha(),
            targets: default_targets(),
        }
    }
}

fn default_rank() -> usize {
    16
}
fn default_alpha() -> f64 {
    32.0
}
fn default_targets() -> Vec<String> {
    LORA_TARGETS.map(String::from).to_vec()
}

/// The projection names adapters may target.
pub const LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

struct Adapter {
    a: Tensor,
    b: Tensor,
    scale: f64,
}

/// A linear layer `(out, in)` with an optional bias and an optional adapter.
pub struct LoraLinear {
    weight: Tensor,
    bias: Option<Tensor>,
    adapter: Option<Adapter>,
}

impl LoraLinear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        LoraLinear {
            weight,
            bias,
            adapter: None,
        }
    }

    /// Adds an adapter; returns its two trainable tensors with their name suffixes.
    pub fn add_lora(&mut self, cfg: &LoraConfig, seed: u64) -> Result<Vec<(String, Var)>> {
        use rand::{Rng, SeedableRng};
        let (out_dim, in_dim) = self.weight.dims2()?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let bound = 1.0 / (in_dim as f64).sqrt();
        let values: Vec<f64> = (0..cfg.rank * in_dim)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let (dtype, device) = (self.weight.dtype(), self.weight.device());
        let a = Var::from_tensor(
            &Tensor::from_vec(values, (cfg.rank, in_dim), device)?.to_dtype(dtype)?,
        )?;
        let b = Var::zeros((out_dim, cfg.rank), dtype, device)?;
        self.adapter = Some(Adapter {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale: cfg.alpha / cfg.rank as f64,
        });
        Ok(vec![
            ("lora_A.weight".to_string(), a),
            ("lora_B.weight".to_string(), b),
        ])
    }

    /// `x·Wᵀ (+ b) (+ adapter)` for `x` of shape `(T, in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = project(x, &self.weight)?;
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        if let Some(ad) = &self.adapter {
            let low = x.matmul(&ad.a.t()?)?.matmul(&ad.b.t()?)?;
            y = (y + (low * ad.scale)?)?;
        }
        Ok(y)
    }

    /// The weight with the adapter folded in.
    pub fn merged_weight(&self) -> Result<Tensor> {
        match &self.adapter {
            None => Ok(self.weight.clone()),
            Some(ad) => self.weight.detach() + (ad.b.matmul(&ad.a)? * ad.scale)?,
        }
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Every tensor of the layer: weight, bias, adapter.
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut out = vec![&self.weight];
        out.extend(&self.bias);
        if let Some(ad) = &self.adapter {
            out.extend([&ad.a, &ad.b]);
        }
        out
    }
}

/// `x·Wᵀ` for `x` `(T, in)` and `W` `(out, in)`, differentiable in both (see the module
/// documentation).
pub fn project(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => x.contiguous()?.apply_op2(&w.contiguous()?, Projection),
        _ => x.matmul(&w.t()?),
    }
}

struct Projection;

impl CustomOp2 for Projection {
    fn name(&self) -> &'static str {
        "projection"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (t, k) = l1.shape().dims2()?;
        let (n, k2) = l2.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("projection: x is {t}×{k} but W is {n}×{k2}");
        }
        let out = s1.matmul(s2, (1, t, n, k), l1, &l2.transpose(0, 1)?)?;
        Ok((out, Shape::from((t, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = x.track_op().then(|| grad.matmul(w)).transpose()?;
        let dw = w.track_op().then(|| grad.t()?.matmul(x)).transpose()?;
        Ok((dx, dw))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::train::max_abs_diff;

    #[test]
    fn projection_matches_matmul_and_skips_frozen_weights() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (4, 3), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f64, 1.0, (5, 3), &dev).unwrap()).unwrap();
        let up = Tensor::randn(0f64, 1.0, (4, 5), &dev).unwrap();
        let ours = project(&x, &w).unwrap();
        let theirs = x.matmul(&w.t().unwrap()).unwrap();
        assert_eq!(
            ours.to_vec2::<f64>().unwrap(),
            theirs.to_vec2::<f64>().unwrap()
        );
        let ga = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (theirs * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &w] {
            assert!(max_abs_diff(ga.get(v).unwrap(), gb.get(v).unwrap()) < 1e-12);
        }
        // A frozen weight gets no gradient (and none is computed).
        let frozen = w.as_tensor().detach();
        let g = (project(&x, &frozen).unwrap() * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&frozen).is_none() && g.get(&x).is_some());
    }

    #[test]
    fn merged_layer_equals_adapted_layer() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f64, 1.0, (6, 5), &dev).unwrap();
        let b = Tensor::randn(0f64, 1.0, 6, &dev).unwrap();
        let mut layer = LoraLinear::new(w, Some(b.clone()));
        let cfg = LoraConfig {
            rank: 2,
            alpha: 4.0,
            targets: vec!["q_proj".into()],
        };
        let vars = layer.add_lora(&cfg, 7).unwrap();
        let x = Tensor::randn(0f64, 1.0, (3, 5), &dev).unwrap();
        // B starts at zero: the adapted layer is the base layer.
        let base = LoraLinear::new(layer.merged_weight().unwrap(), Some(b.clone()));
        assert_eq!(
            layer.forward(&x).unwrap().to_vec2::<f64>().unwrap(),
            base.forward(&x).unwrap().to_vec2::<f64>().unwrap()
        );
        // After B moves, merging still computes the same function.
        vars[1]
            .1
            .set(&Tensor::randn(0f64, 1.0, (6, 2), &dev).unwrap())
            .unwrap();
        let merged = LoraLinear::new(layer.merged_weight().unwrap(), Some(b));
        let diff = max_abs_diff(&layer.forward(&x).unwrap(), &merged.forward(&x).unwrap());
        assert!(diff < 1e-12, "{diff}");
        assert_eq!(vars[0].1.dtype(), DType::F64);
    }
}
