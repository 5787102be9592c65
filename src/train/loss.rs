//! Token cross-entropy with a fused backward: the negative log-likelihood of each row's target
//! under the softmax of its logits.
//!
//! Over a vocabulary of 50k–150k entries the logits are the largest activation of a step.
//! Composed from candle ops, log-softmax makes several full-size temporaries forward and again
//! backward; on the CPU this op reads the logits once per pass instead: forward computes each
//! row's log-sum-exp and returns `lse − logit[target]`; backward writes
//! `(softmax − onehot(target)) · ∂loss` straight into the gradient. Rows run in parallel, each
//! row's sums in a fixed order (bitwise reproducible). Elsewhere (GPU) the composed ops run; the
//! tests check both agree.

use candle_core::{CpuStorage, CustomOp2, D, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Per-row negative log-likelihood of `targets` (`(n,)` u32) under `logits` (`(n, V)`).
pub fn token_nll(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    match logits.device() {
        Device::Cpu => logits
            .contiguous()?
            .apply_op2(&targets.contiguous()?, TokenNll),
        _ => composed(logits, targets),
    }
}

fn composed(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    log_probs
        .gather(&targets.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()
}

struct TokenNll;

/// `max + ln Σ exp(x − max)` of one row, in f64.
fn log_sum_exp<T: Copy + Into<f64>>(row: &[T]) -> f64 {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x.into()));
    let sum: f64 = row.iter().map(|&x| (x.into() - max).exp()).sum();
    max + sum.ln()
}

fn check_targets(targets: &[u32], vocab: usize) -> Result<()> {
    if let Some(bad) = targets.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("token cross-entropy: target {bad} outside the vocabulary of {vocab}");
    }
    Ok(())
}

macro_rules! nll_forward {
    ($logits:expr, $targets:expr, $vocab:expr, $t:ty) => {{
        let out: Vec<$t> = $logits
            .par_chunks($vocab)
            .zip($targets.par_iter())
            .map(|(row, &target)| (log_sum_exp(row) - f64::from(row[target as usize])) as $t)
            .collect();
        out
    }};
}

impl CustomOp2 for TokenNll {
    fn name(&self) -> &'static str {
        "token-nll"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, vocab) = l1.shape().dims2()?;
        let (Some((a1, b1)), Some((a2, b2))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("token cross-entropy: inputs must be contiguous");
        };
        let CpuStorage::U32(targets) = s2 else {
            candle_core::bail!("token cross-entropy: targets must be u32");
        };
        let targets = &targets[a2..b2];
        if targets.len() != n {
            candle_core::bail!(
                "token cross-entropy: {} targets for {n} rows",
                targets.len()
            );
        }
        check_targets(targets, vocab)?;
        let out = match s1 {
            CpuStorage::F32(x) => CpuStorage::F32(nll_forward!(&x[a1..b1], targets, vocab, f32)),
            CpuStorage::F64(x) => CpuStorage::F64(nll_forward!(&x[a1..b1], targets, vocab, f64)),
            _ => candle_core::bail!("token cross-entropy: logits must be f32 or f64"),
        };
        Ok((out, Shape::from(n)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, vocab) = logits.dims2()?;
        let targets = targets.to_vec1::<u32>()?;
        let upstream = grad_res.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        macro_rules! grad {
            ($t:ty) => {{
                let x = logits.flatten_all()?.to_vec1::<$t>()?;
                let mut g = vec![0 as $t; n * vocab];
                g.par_chunks_mut(vocab)
                    .zip(x.par_chunks(vocab))
                    .enumerate()
                    .for_each(|(r, (g_row, row))| {
                        let lse = log_sum_exp(row);
                        let scale = upstream[r];
                        for (gi, &xi) in g_row.iter_mut().zip(row) {
                            *gi = ((f64::from(xi) - lse).exp() * scale) as $t;
                        }
                        g_row[targets[r] as usize] -= scale as $t;
                    });
                Tensor::from_vec(g, (n, vocab), logits.device())?
            }};
        }
        let grad = match logits.dtype() {
            DType::F32 => grad!(f32),
            DType::F64 => grad!(f64),
            other => candle_core::bail!("token cross-entropy: {other:?} logits"),
        };
        Ok((Some(grad), None))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Var;

    use super::*;
    use crate::train::max_abs_diff;

    #[test]
    fn fused_matches_composed_values_and_gradients() {
        let dev = Device::Cpu;
        let logits = Var::from_tensor(&Tensor::randn(0f64, 3.0, (5, 11), &dev).unwrap()).unwrap();
        let targets = Tensor::new(&[0u32, 10, 3, 3, 7], &dev).unwrap();
        let weights = Tensor::new(&[1f64, 2.0, -1.0, 0.5, 3.0], &dev).unwrap();
        let fused = token_nll(&logits, &targets).unwrap();
        let reference = composed(&logits, &targets).unwrap();
        let (a, b): (Vec<f64>, Vec<f64>) = (fused.to_vec1().unwrap(), reference.to_vec1().unwrap());
        assert!(
            a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-12),
            "{a:?} {b:?}"
        );
        let ga = (fused * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gb = (reference * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let diff = max_abs_diff(ga.get(&logits).unwrap(), gb.get(&logits).unwrap());
        assert!(diff < 1e-12, "{diff}");
        assert!(token_nll(&logits, &Tensor::new(&[0u32, 11, 0, 0, 0], &dev).unwrap()).is_err());
    }
}
