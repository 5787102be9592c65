//! Gradient checkpointing: a decoder block as one op that keeps only its input for backward.
//!
//! Without it, backward holds every intermediate activation of every block (the norms, q/k/v,
//! the MLP's 4–6× wide hidden states) until the end of the pass; for the 0.5B model on a
//! 2048-token row that does not fit in 24 GiB. [`recomputed`] runs the block forward without
//! keeping its graph; in backward it runs the block forward again from the saved input — with
//! a graph, as one small backward pass — and hands on the input's gradient. The gradients of
//! the block's own tensors (weights, norms, adapters) cannot travel back through candle's
//! `CustomOp1` interface, so they are added into the model's [`LayerGrads`], which the trainer
//! merges with the main pass's gradients.
//!
//! The recomputation runs the same ops on the same values as the first forward, so results
//! are bitwise those of the block run without checkpointing (the tests check it).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, Var};

use super::model::{Layer, LayerContext, LayerGrads};

/// `layer(x)`, recomputed in backward (CPU; see the module documentation).
pub(super) fn recomputed(
    x: &Tensor,
    layer: Arc<Layer>,
    ctx: LayerContext,
    grads: LayerGrads,
) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Recompute { layer, ctx, grads })
}

struct Recompute {
    layer: Arc<Layer>,
    ctx: LayerContext,
    grads: LayerGrads,
}

impl CustomOp1 for Recompute {
    fn name(&self) -> &'static str {
        "recomputed-layer"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("recomputed layer: the input must be contiguous");
        };
        let shape = layout.shape().clone();
        let device = candle_core::Device::Cpu;
        let x = match storage {
            CpuStorage::F32(v) => Tensor::from_slice(&v[a..b], shape.clone(), &device)?,
            CpuStorage::F64(v) => Tensor::from_slice(&v[a..b], shape.clone(), &device)?,
            _ => candle_core::bail!("recomputed layer: f32 or f64 only"),
        };
        let y = self.layer.forward(&x, &self.ctx)?.detach();
        let out = match storage {
            CpuStorage::F32(_) => CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?),
            _ => CpuStorage::F64(y.flatten_all()?.to_vec1::<f64>()?),
        };
        Ok((out, shape))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let input = Var::from_tensor(&x.detach())?;
        let y = self.layer.forward(input.as_tensor(), &self.ctx)?;
        let store = (y * grad.detach())?.sum_all()?.backward()?;
        let mut grads = self.grads.lock().expect("layer gradients");
        for t in self.layer.tensors() {
            if let Some(g) = store.get(t) {
                let sum = match grads.remove(&t.id()) {
                    Some(acc) => (acc + g)?,
                    None => g.clone(),
                };
                grads.insert(t.id(), sum);
            }
        }
        Ok(store.get(input.as_tensor()).cloned())
    }
}
