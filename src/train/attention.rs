//! Segment-causal attention with a backward pass: the attention of packed training rows.
//!
//! A training batch is many examples laid end to end as one flat sequence of `T` tokens
//! ([`Segments`] says where each example starts and ends). Token `t` attends to the tokens of its
//! own example up to itself — never to another example — so the packed examples are trained
//! exactly as if each were alone (the block-diagonal causal mask).
//!
//! On the CPU this is a [`CustomOp3`] in the style of FlashAttention: the forward pass scores
//! each query row against its causal prefix only (no `T × T` matrix, no mask tensor), and the
//! backward pass recomputes the probabilities row by row from the queries and keys instead of
//! storing them, so attention costs `O(T · d)` memory whatever the row length. Grouped-query
//! attention is native: the query heads that share a KV head read the same K/V. Work is split
//! over tokens (forward, dQ) and over keys (dK, dV) on rayon, each output written by one thread,
//! so results do not depend on the thread count's scheduling (bitwise reproducible).
//!
//! On other devices [`segment_attention`] builds the same mask as a tensor and uses candle's
//! differentiable ops (memory `O(T²)` per head; the GPU path), and the tests check that both
//! give the same values and gradients.
//!
//! Layouts: `q` is `(T, H, D)`, `k` and `v` are `(T, G, D)` with `H` a multiple of `G`; the
//! result is `(T, H, D)`. f32 and f64 are supported (f64 for gradient checks).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Where each token's example starts and ends in a flat batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    /// For each token, the index of the first token of its example.
    start: Arc<[u32]>,
    /// For each token, one past the index of the last token of its example.
    end: Arc<[u32]>,
}

impl Segments {
    /// Segments of the given lengths, laid end to end.
    pub fn from_lengths(lengths: impl IntoIterator<Item = usize>) -> Self {
        let (mut start, mut end) = (Vec::new(), Vec::new());
        let mut at = 0u32;
        for len in lengths {
            let stop = at + len as u32;
            for _ in 0..len {
                start.push(at);
                end.push(stop);
            }
            at = stop;
        }
        Segments {
            start: start.into(),
            end: end.into(),
        }
    }

    /// Tokens in the batch.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }

    /// Whether tokens `a` and `b` belong to the same example.
    pub fn same(&self, a: usize, b: usize) -> bool {
        self.start[a] == self.start[b]
    }
}

/// Attention of `q` over `k`/`v` within each segment, causal, scaled by `1/√D`.
pub fn segment_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: &Segments,
) -> Result<Tensor> {
    let (t, h, d) = q.dims3()?;
    let (tk, g, dk) = k.dims3()?;
    if tk != t || dk != d || v.dims3()? != (t, g, d) || g == 0 || h % g != 0 {
        candle_core::bail!(
            "segment attention: q {:?}, k {:?}, v {:?} do not fit (T, H, D) / (T, G, D)",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if segments.len() != t {
        candle_core::bail!(
            "segment attention: {} segment entries for {t} tokens",
            segments.len()
        );
    }
    let scale = 1.0 / (d as f64).sqrt();
    match q.device() {
        Device::Cpu => {
            let op = SegmentAttention {
                segments: segments.clone(),
                scale,
            };
            q.contiguous()?
                .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
        }
        _ => masked_attention(q, k, v, segments, scale),
    }
}

/// The same attention from candle's differentiable ops and an explicit mask (any device).
fn masked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: &Segments,
    scale: f64,
) -> Result<Tensor> {
    let (t, h, d) = q.dims3()?;
    let g = k.dim(1)?;
    let rep = h / g;
    let repeat = |x: &Tensor| -> Result<Tensor> {
        // (T, G, D) → (G·rep, T, D) with query head i reading KV head i / rep.
        let x = x.transpose(0, 1)?.contiguous()?;
        let x = x.unsqueeze(1)?.expand((g, rep, t, d))?;
        x.reshape((h, t, d))
    };
    let q = q.transpose(0, 1)?.contiguous()?;
    let (k, v) = (repeat(k)?, repeat(v)?);
    let mut mask = vec![0f32; t * t];
    for i in 0..t {
        for j in 0..t {
            if j > i || !segments.same(i, j) {
                mask[i * t + j] = f32::NEG_INFINITY;
            }
        }
    }
    let mask = Tensor::from_vec(mask, (t, t), q.device())?.to_dtype(q.dtype())?;
    let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
    let probs = candle_nn::ops::softmax(&scores, candle_core::D::Minus1)?;
    probs.matmul(&v)?.transpose(0, 1)?.contiguous()
}

/// The CPU op: see the module documentation.
struct SegmentAttention {
    segments: Segments,
    scale: f64,
}

/// The float types the CPU kernels run in.
trait Real:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
    + candle_core::WithDType
{
    const ZERO: Self;
    const NEG_INFINITY: Self;
    fn of(x: f64) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
}

macro_rules! real {
    ($t:ty) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            fn of(x: f64) -> Self {
                x as $t
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
        }
    };
}
real!(f32);
real!(f64);

/// Dot product with eight independent accumulators (vectorizes; fixed summation order).
fn dot<R: Real>(a: &[R], b: &[R]) -> R {
    let mut acc = [R::ZERO; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        sum += *x * *y;
    }
    sum
}

/// `out += s · x`.
fn axpy<R: Real>(out: &mut [R], s: R, x: &[R]) {
    for (o, v) in out.iter_mut().zip(x) {
        *o += s * *v;
    }
}

/// The sizes of one call.
#[derive(Clone, Copy)]
struct Dims {
    t: usize,
    h: usize,
    g: usize,
    d: usize,
}

impl Dims {
    fn q(&self, t: usize, h: usize) -> std::ops::Range<usize> {
        let at = (t * self.h + h) * self.d;
        at..at + self.d
    }
    fn kv(&self, t: usize, g: usize) -> std::ops::Range<usize> {
        let at = (t * self.g + g) * self.d;
        at..at + self.d
    }
    fn group(&self, h: usize) -> usize {
        h / (self.h / self.g)
    }
}

/// One call's inputs.
struct Inputs<'a, R> {
    q: &'a [R],
    k: &'a [R],
    v: &'a [R],
    dims: Dims,
    seg: &'a Segments,
    scale: R,
}

impl<R: Real> Inputs<'_, R> {
    /// Scores of query `(t, h)` against its causal prefix into `scores`; returns the maximum.
    fn scores_of(&self, t: usize, h: usize, scores: &mut Vec<R>) -> R {
        scores.clear();
        let qt = &self.q[self.dims.q(t, h)];
        let g = self.dims.group(h);
        let mut max = R::NEG_INFINITY;
        for j in self.seg.start[t] as usize..=t {
            let s = dot(qt, &self.k[self.dims.kv(j, g)]) * self.scale;
            if s > max {
                max = s;
            }
            scores.push(s);
        }
        max
    }
}

fn forward<R: Real>(inp: &Inputs<'_, R>) -> Vec<R> {
    let Inputs { v, dims, seg, .. } = *inp;
    let mut out = vec![R::ZERO; dims.t * dims.h * dims.d];
    out.par_chunks_mut(dims.h * dims.d)
        .enumerate()
        .for_each_init(Vec::new, |scores, (t, row)| {
            let start = seg.start[t] as usize;
            for h in 0..dims.h {
                let max = inp.scores_of(t, h, scores);
                let mut sum = R::ZERO;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let o = &mut row[h * dims.d..(h + 1) * dims.d];
                let g = dims.group(h);
                for (i, p) in scores.iter().enumerate() {
                    axpy(o, *p / sum, &v[dims.kv(start + i, g)]);
                }
            }
        });
    out
}

/// Gradients of the attention: `(dq, dk, dv)` from the inputs, the output and its gradient.
fn backward<R: Real>(inp: &Inputs<'_, R>, out: &[R], grad: &[R]) -> (Vec<R>, Vec<R>, Vec<R>) {
    let Inputs {
        q,
        k,
        v,
        dims,
        seg,
        scale,
    } = *inp;
    let Dims { t: n, h, g, d } = dims;
    // Pass 1, per query token: log-sum-exp of the scores, dO·O, and dQ.
    let mut lse = vec![R::ZERO; n * h];
    let mut delta = vec![R::ZERO; n * h];
    let mut dq = vec![R::ZERO; n * h * d];
    dq.par_chunks_mut(h * d)
        .zip(lse.par_chunks_mut(h))
        .zip(delta.par_chunks_mut(h))
        .enumerate()
        .for_each_init(Vec::new, |scores, (t, ((dq_row, lse_row), delta_row))| {
            let start = seg.start[t] as usize;
            for hh in 0..h {
                let max = inp.scores_of(t, hh, scores);
                let mut sum = R::ZERO;
                for s in scores.iter() {
                    sum += (*s - max).exp();
                }
                let lse_th = max + sum.ln();
                lse_row[hh] = lse_th;
                let go = &grad[dims.q(t, hh)];
                let dlt = dot(go, &out[dims.q(t, hh)]);
                delta_row[hh] = dlt;
                let gg = dims.group(hh);
                let dq_th = &mut dq_row[hh * d..(hh + 1) * d];
                for (i, s) in scores.iter().enumerate() {
                    let j = start + i;
                    let p = (*s - lse_th).exp();
                    let ds = p * (dot(go, &v[dims.kv(j, gg)]) - dlt);
                    axpy(dq_th, ds * scale, &k[dims.kv(j, gg)]);
                }
            }
        });
    // Pass 2, per key token: dK and dV over the queries that see it.
    let mut dk = vec![R::ZERO; n * g * d];
    let mut dv = vec![R::ZERO; n * g * d];
    dk.par_chunks_mut(g * d)
        .zip(dv.par_chunks_mut(g * d))
        .enumerate()
        .for_each(|(j, (dk_row, dv_row))| {
            let end = seg.end[j] as usize;
            for hh in 0..h {
                let gg = dims.group(hh);
                let kj = &k[dims.kv(j, gg)];
                let vj = &v[dims.kv(j, gg)];
                let dk_j = &mut dk_row[gg * d..(gg + 1) * d];
                for t in j..end {
                    let qt = &q[dims.q(t, hh)];
                    let p = (dot(qt, kj) * scale - lse[t * h + hh]).exp();
                    let go = &grad[dims.q(t, hh)];
                    let ds = p * (dot(go, vj) - delta[t * h + hh]);
                    axpy(dk_j, ds * scale, qt);
                }
                let dv_j = &mut dv_row[gg * d..(gg + 1) * d];
                for t in j..end {
                    let qt = &q[dims.q(t, hh)];
                    let p = (dot(qt, kj) * scale - lse[t * h + hh]).exp();
                    axpy(dv_j, p, &grad[dims.q(t, hh)]);
                }
            }
        });
    (dq, dk, dv)
}

fn slice<'a, R: candle_core::WithDType>(s: &'a [R], l: &Layout) -> Result<&'a [R]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("segment attention: inputs must be contiguous"),
    }
}

fn values<R: Real>(t: &Tensor) -> Result<Vec<R>> {
    t.flatten_all()?.to_vec1::<R>()
}

impl SegmentAttention {
    fn dims(&self, l1: &Layout, l2: &Layout) -> Result<Dims> {
        let (t, h, d) = l1.shape().dims3()?;
        let g = l2.shape().dims()[1];
        Ok(Dims { t, h, g, d })
    }

    fn backward_as<R: Real>(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (t, h, d) = q.dims3()?;
        let g = k.dim(1)?;
        let dims = Dims { t, h, g, d };
        let (q_values, k_values, v_values) = (values(q)?, values(k)?, values(v)?);
        let inputs = Inputs {
            q: &q_values,
            k: &k_values,
            v: &v_values,
            dims,
            seg: &self.segments,
            scale: R::of(self.scale),
        };
        let (dq, dk, dv) = backward(&inputs, &values(out)?, &values(grad)?);
        let dev = q.device();
        Ok((
            Tensor::from_vec(dq, (t, h, d), dev)?,
            Tensor::from_vec(dk, (t, g, d), dev)?,
            Tensor::from_vec(dv, (t, g, d), dev)?,
        ))
    }
}

impl CustomOp3 for SegmentAttention {
    fn name(&self) -> &'static str {
        "segment-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.dims(l1, l2)?;
        let shape = l1.shape().clone();
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                CpuStorage::F32(forward(&Inputs {
                    q: slice(q, l1)?,
                    k: slice(k, l2)?,
                    v: slice(v, l3)?,
                    dims,
                    seg: &self.segments,
                    scale: self.scale as f32,
                }))
            }
            (CpuStorage::F64(q), CpuStorage::F64(k), CpuStorage::F64(v)) => {
                CpuStorage::F64(forward(&Inputs {
                    q: slice(q, l1)?,
                    k: slice(k, l2)?,
                    v: slice(v, l3)?,
                    dims,
                    seg: &self.segments,
                    scale: self.scale,
                }))
            }
            _ => candle_core::bail!("segment attention: q, k, v must all be f32 or all f64"),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dq, dk, dv) = match q.dtype() {
            DType::F32 => self.backward_as::<f32>(q, k, v, res, grad_res)?,
            DType::F64 => self.backward_as::<f64>(q, k, v, res, grad_res)?,
            other => candle_core::bail!("segment attention: {other:?} is not supported"),
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Var;

    use super::*;

    fn random(shape: (usize, usize, usize), seed: u64) -> Var {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = shape.0 * shape.1 * shape.2;
        let values: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// The CPU op and the masked reference agree on values and on every gradient, with packed
    /// segments and grouped-query heads.
    #[test]
    fn op_matches_masked_reference_values_and_gradients() {
        let segments = Segments::from_lengths([3, 1, 5]);
        let (t, h, g, d) = (9, 4, 2, 8);
        let (q, k, v) = (
            random((t, h, d), 1),
            random((t, g, d), 2),
            random((t, g, d), 3),
        );
        let weights = random((t, h, d), 4);
        let scale = 1.0 / (d as f64).sqrt();
        let ours = segment_attention(&q, &k, &v, &segments).unwrap();
        let reference = masked_attention(&q, &k, &v, &segments, scale).unwrap();
        let diff = (&ours - &reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-12);
        let loss_ours = (ours * weights.as_tensor()).unwrap().sum_all().unwrap();
        let loss_ref = (reference * weights.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap();
        let (ga, gb) = (loss_ours.backward().unwrap(), loss_ref.backward().unwrap());
        for var in [&q, &k, &v] {
            let a = ga.get(var).expect("gradient from the op");
            let b = gb.get(var).expect("gradient from the reference");
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f64>().unwrap() < 1e-12);
        }
    }

    /// A token never sees another segment: changing the second example's keys and values
    /// leaves the first example's outputs bit for bit unchanged.
    #[test]
    fn segments_do_not_see_each_other() {
        let segments = Segments::from_lengths([4, 4]);
        let (q, k, v) = (
            random((8, 2, 4), 5),
            random((8, 1, 4), 6),
            random((8, 1, 4), 7),
        );
        let a = segment_attention(&q, &k, &v, &segments).unwrap();
        let k2 = Tensor::cat(
            &[
                k.narrow(0, 0, 4).unwrap(),
                random((4, 1, 4), 8).narrow(0, 0, 4).unwrap(),
            ],
            0,
        )
        .unwrap();
        let b = segment_attention(&q, &k2, &v, &segments).unwrap();
        let first = |x: &Tensor| {
            x.narrow(0, 0, 4)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        assert_eq!(first(&a), first(&b));
        let last = |x: &Tensor| {
            x.narrow(0, 4, 4)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        assert_ne!(last(&a), last(&b));
    }
}
