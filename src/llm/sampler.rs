//! Sampling parameters and the per-sample token sampler: greedy, temperature, top-k, top-p, and
//! the log-probability of every chosen token.
//!
//! Log-probabilities are always those of the model's own distribution — the log-softmax of the
//! raw logits, before temperature, top-k or top-p — so that the paper's fluency score
//! f(r) = exp(−mean log p) measures the model, not the sampling settings.
//!
//! Every sample draws from its own random stream, derived from (request seed, sample index) by
//! [`sample_seed`]: the same seed gives the same tokens whatever else shares the batch.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::error::LlmError;

/// How to sample one request's completions.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerSettings {
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose mass reaches `top_p`
    /// (1.0 = off).
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Most tokens generated per completion (clipped to what the context window leaves).
    pub max_tokens: usize,
    /// A completion ends where one of these strings appears; the text is cut before it.
    pub stop: Vec<String>,
    /// Seed of the request; sample i draws from the stream [`sample_seed`]`(seed, i)`.
    pub seed: u64,
    /// Keep sampling past end-of-sequence tokens (benchmarks: fixed-length completions).
    pub ignore_eos: bool,
}

impl Default for SamplerSettings {
    fn default() -> Self {
        SamplerSettings {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_tokens: 256,
            stop: Vec::new(),
            seed: 0,
            ignore_eos: false,
        }
    }
}

impl SamplerSettings {
    /// Greedy decoding of up to `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        SamplerSettings {
            temperature: 0.0,
            max_tokens,
            ..Default::default()
        }
    }

    /// Checks the ranges: temperature ≥ 0, 0 < top_p ≤ 1, max_tokens ≥ 1, no empty stop string.
    pub fn validate(&self) -> Result<(), LlmError> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(LlmError::InvalidParams(format!(
                "temperature must be a finite number ≥ 0 (0 = greedy), got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(LlmError::InvalidParams(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        if self.max_tokens == 0 {
            return Err(LlmError::InvalidParams(
                "max_tokens must be at least 1".into(),
            ));
        }
        if self.stop.iter().any(|s| s.is_empty()) {
            return Err(LlmError::InvalidParams(
                "stop sequences must not be empty strings".into(),
            ));
        }
        Ok(())
    }
}

/// The seed of sample `index` of a request seeded with `seed` (SplitMix64 of both).
pub fn sample_seed(seed: u64, index: u64) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    mix(mix(seed) ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

/// `log Σ exp(logits)`, computed stably.
pub fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    max + sum.ln()
}

/// Draws the tokens of one sample.
#[derive(Debug, Clone)]
pub struct Sampler {
    rng: StdRng,
}

impl Sampler {
    /// The sampler of sample `index` of a request seeded with `seed`.
    pub fn new(seed: u64, index: u64) -> Self {
        Sampler {
            rng: StdRng::seed_from_u64(sample_seed(seed, index)),
        }
    }

    /// Picks the next token from `logits`; returns it and its untempered log-probability.
    pub fn sample(&mut self, logits: &[f32], params: &SamplerSettings) -> (u32, f32) {
        let lse = log_sum_exp(logits);
        let token = if params.temperature == 0.0 {
            argmax(logits)
        } else {
            self.draw(logits, params)
        };
        (token as u32, logits[token] - lse)
    }

    fn draw(&mut self, logits: &[f32], params: &SamplerSettings) -> usize {
        let inv_t = 1.0 / params.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weight = |l: f32| ((l - max) * inv_t).exp();
        let vocab = logits.len();
        let top_k = if params.top_k == 0 {
            vocab
        } else {
            params.top_k.min(vocab)
        };
        if top_k == vocab && params.top_p >= 1.0 {
            // The full distribution, walked in token order.
            let total: f32 = logits.iter().map(|&l| weight(l)).sum();
            let mut u = self.rng.random::<f32>() * total;
            for (i, &l) in logits.iter().enumerate() {
                u -= weight(l);
                if u <= 0.0 {
                    return i;
                }
            }
            return argmax(logits);
        }
        // Candidates: the most likely tokens, widening the window until it holds top_k tokens
        // or the nucleus (the mass of the whole distribution times top_p).
        let total: f32 = if params.top_p < 1.0 {
            logits.iter().map(|&l| weight(l)).sum()
        } else {
            0.0
        };
        let mut window = top_k.min(64);
        let kept: Vec<(usize, f32)> = loop {
            let mut idx: Vec<usize> = (0..vocab).collect();
            if window < vocab {
                idx.select_nth_unstable_by(window - 1, |&a, &b| cmp_desc(logits, a, b));
                idx.truncate(window);
            }
            idx.sort_unstable_by(|&a, &b| cmp_desc(logits, a, b));
            let mut kept = Vec::with_capacity(idx.len());
            let mut mass = 0.0;
            let mut reached = false;
            for &i in &idx {
                let w = weight(logits[i]);
                kept.push((i, w));
                mass += w;
                if params.top_p < 1.0 && mass >= params.top_p * total {
                    reached = true;
                    break;
                }
            }
            if reached || window >= top_k {
                break kept;
            }
            window = (window * 16).min(top_k);
        };
        let mass: f32 = kept.iter().map(|&(_, w)| w).sum();
        let mut u = self.rng.random::<f32>() * mass;
        for &(i, w) in &kept {
            u -= w;
            if u <= 0.0 {
                return i;
            }
        }
        kept[kept.len() - 1].0
    }
}

/// Samples one token for each (sampler, logits, params) job, the jobs split across candle's CPU
/// pool. Each job uses only its own sampler, so the result does not depend on the split.
pub fn sample_all(jobs: &mut [(&mut Sampler, &[f32], &SamplerSettings)]) -> Vec<(u32, f32)> {
    struct Shared<T>(*mut T);
    impl<T> Clone for Shared<T> {
        fn clone(&self) -> Self {
            *self
        }
    }
    impl<T> Copy for Shared<T> {}
    unsafe impl<T> Send for Shared<T> {}
    unsafe impl<T> Sync for Shared<T> {}
    let mut out = vec![(0u32, 0f32); jobs.len()];
    let out_ptr = Shared(out.as_mut_ptr());
    let jobs_ptr = Shared(jobs.as_mut_ptr());
    let run = |range: std::ops::Range<usize>| {
        let (out_ptr, jobs_ptr) = (out_ptr, jobs_ptr);
        for i in range {
            // SAFETY: every index is handed to exactly one worker; job i and out[i] are touched
            // only by that worker.
            let job = unsafe { &mut *jobs_ptr.0.add(i) };
            let picked = job.0.sample(job.1, job.2);
            unsafe { *out_ptr.0.add(i) = picked };
        }
    };
    if jobs.len() < 2 {
        run(0..jobs.len());
    } else {
        candle_core::utils::barrier_pool().execute_chunked(jobs.len(), run);
    }
    out
}

fn cmp_desc(logits: &[f32], a: usize, b: usize) -> std::cmp::Ordering {
    logits[b].total_cmp(&logits[a]).then(a.cmp(&b))
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: usize) -> SamplerSettings {
        SamplerSettings {
            temperature,
            top_p,
            top_k,
            ..Default::default()
        }
    }

    fn histogram(logits: &[f32], p: &SamplerSettings, draws: usize) -> Vec<usize> {
        let mut s = Sampler::new(7, 0);
        let mut h = vec![0; logits.len()];
        for _ in 0..draws {
            h[s.sample(logits, p).0 as usize] += 1;
        }
        h
    }

    #[test]
    fn greedy_takes_the_argmax_and_reports_its_logprob() {
        let logits = [0.5f32, 3.0, 3.0, -1.0];
        let (tok, lp) = Sampler::new(0, 0).sample(&logits, &SamplerSettings::greedy(1));
        assert_eq!(tok, 1);
        let expected = 3.0 - log_sum_exp(&logits);
        assert!((lp - expected).abs() < 1e-6);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let logits = [0.1f32, 0.2, 2.0, 1.9];
        assert_eq!(histogram(&logits, &params(1.5, 1.0, 1), 200)[2], 200);
    }

    #[test]
    fn top_k_keeps_only_the_k_best() {
        let logits = [1.0f32, 0.9, 0.8, 5.0, 0.0];
        let h = histogram(&logits, &params(5.0, 1.0, 2), 2000);
        assert_eq!(h[1] + h[2] + h[4], 0, "{h:?}");
        assert!(h[0] > 300 && h[3] > 300, "{h:?}");
    }

    #[test]
    fn top_p_cuts_the_tail() {
        // Probabilities ≈ 0.64, 0.24, 0.09, 0.03: top_p 0.8 keeps the first two.
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let h = histogram(&logits, &params(1.0, 0.8, 0), 3000);
        assert_eq!(h[2] + h[3], 0, "{h:?}");
        let ratio = h[0] as f32 / h[1] as f32;
        assert!((ratio - std::f32::consts::E).abs() < 0.5, "{h:?}");
    }

    #[test]
    fn top_p_widens_past_the_first_window() {
        // 200 equally likely tokens: the nucleus at 0.9 needs 180 of them (> 64).
        let logits = vec![0.0f32; 200];
        let h = histogram(&logits, &params(1.0, 0.9, 0), 20_000);
        let used = h.iter().filter(|&&c| c > 0).count();
        assert!((170..=180).contains(&used), "{used}");
    }

    #[test]
    fn temperature_sharpens_and_flattens() {
        let logits = [1.0f32, 0.0];
        let cold = histogram(&logits, &params(0.25, 1.0, 0), 4000);
        let hot = histogram(&logits, &params(4.0, 1.0, 0), 4000);
        // p0 = sigmoid(1/T): 0.982 at T = 0.25, 0.562 at T = 4.
        assert!(cold[0] > 3800, "{cold:?}");
        assert!((2000..2500).contains(&hot[0]), "{hot:?}");
    }

    #[test]
    fn logprobs_ignore_temperature() {
        let logits = [2.0f32, 1.0, 0.0];
        let mut s = Sampler::new(3, 1);
        for _ in 0..50 {
            let (tok, lp) = s.sample(&logits, &params(0.3, 0.9, 2));
            assert!((lp - (logits[tok as usize] - log_sum_exp(&logits))).abs() < 1e-6);
        }
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let logits = vec![0.0f32; 1000];
        let p = params(1.0, 1.0, 0);
        let run = |seed, index| {
            let mut s = Sampler::new(seed, index);
            (0..20).map(|_| s.sample(&logits, &p).0).collect::<Vec<_>>()
        };
        assert_eq!(run(1, 0), run(1, 0));
        assert_ne!(run(1, 0), run(1, 1));
        assert_ne!(run(1, 0), run(2, 0));
    }

    #[test]
    fn invalid_params_are_rejected() {
        assert!(params(-1.0, 1.0, 0).validate().is_err());
        assert!(params(1.0, 0.0, 0).validate().is_err());
        assert!(params(f32::NAN, 1.0, 0).validate().is_err());
        let mut p = params(1.0, 1.0, 0);
        p.stop = vec![String::new()];
        assert!(p.validate().is_err());
        assert!(SamplerSettings::default().validate().is_ok());
    }
}
