//! Log-probabilities of generated tokens (the OpenAI `logprobs` options).
//!
//! They describe the model's own distribution at each position: the
//! log-softmax of the raw logits at temperature 1, before the repetition
//! penalty and the cuts of sampling, as OpenAI and llama.cpp's server
//! report them. The normalizer is one vectorized pass over the row
//! ([`worker_compute::draw::exp_sum`]) and the alternatives one top-k
//! pass ([`worker_compute::select::top_k`]), taken before the sampler may
//! change the row.

use worker_compute::{draw, select};

pub use worker_common::job::{MAX_TOP_LOGPROBS as MAX_TOP, TokenLogprob, TokenText};

/// A token's log-probability in one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// The token.
    pub id: u32,
    /// Its log-probability.
    pub logprob: f32,
}

/// What one logits row says, read before sampling.
#[derive(Debug, Clone)]
pub struct RowLogprobs {
    /// `ln Σ exp(logit)`.
    log_norm: f64,
    top: Vec<(u32, f32)>,
}

impl RowLogprobs {
    /// The normalizer of `row` and its `n` most likely tokens (at most
    /// [`MAX_TOP`]).
    pub fn of(row: &[f32], n: usize) -> Self {
        let max = draw::max(row);
        let log_norm = if max.is_finite() {
            f64::from(max) + draw::exp_sum(row, max).ln()
        } else {
            // An infinite logit takes all the mass; NaN rows have none.
            f64::from(max)
        };
        let mut top = Vec::new();
        let n = n.min(MAX_TOP);
        if n > 0 {
            select::top_k(row, n, &mut top);
            // A NaN logit says nothing; it is no alternative.
            top.retain(|e| !e.1.is_nan());
        }
        for e in top.iter_mut() {
            e.1 = log_prob(e.1, log_norm);
        }
        RowLogprobs { log_norm, top }
    }

    /// The log-probability of token `id`, whose raw logit was `logit`.
    pub fn token(&self, id: u32, logit: f32) -> Scored {
        Scored {
            id,
            logprob: log_prob(logit, self.log_norm),
        }
    }

    /// The entry of the chosen token `id` (raw logit `logit`), its text
    /// starting at byte `offset` of the output, with the alternatives;
    /// `text` gives a token's text and bytes.
    pub fn entry(
        &self,
        id: u32,
        logit: f32,
        offset: usize,
        text: impl Fn(u32) -> (String, Vec<u8>),
    ) -> TokenLogprob {
        let named = |id: u32, logprob: f32| {
            let (token, bytes) = text(id);
            TokenText {
                id,
                token,
                bytes,
                logprob,
            }
        };
        TokenLogprob {
            chosen: named(id, self.token(id, logit).logprob),
            top: self.top.iter().map(|&(t, l)| named(t, l)).collect(),
            offset,
        }
    }
}

fn log_prob(logit: f32, log_norm: f64) -> f32 {
    if logit == f32::INFINITY && log_norm == f64::INFINITY {
        return 0.0;
    }
    let d = (f64::from(logit) - log_norm) as f32;
    // NaN stays NaN (a row without a distribution); otherwise never above
    // 0 (rounding of the normalizer could make the likeliest token's
    // log-probability a hair positive).
    if d.is_nan() { d } else { d.min(0.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn they_are_the_log_softmax() {
        let row: Vec<f32> = (0..3000)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
            .collect();
        let norm = row.iter().map(|&l| f64::from(l).exp()).sum::<f64>().ln();
        let lp = RowLogprobs::of(&row, 3);
        assert_eq!(lp.top.len(), 3);
        for w in lp.top.windows(2) {
            assert!(w[0].1 >= w[1].1);
        }
        for &(id, got) in &lp.top {
            let want = f64::from(row[id as usize]) - norm;
            assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");
        }
        let t = lp.token(17, row[17]);
        let want = f64::from(row[17]) - norm;
        assert!((f64::from(t.logprob) - want).abs() < 1e-5);
        let mass: f64 = lp.top.iter().map(|e| f64::from(e.1).exp()).sum();
        assert!(mass <= 1.0 + 1e-6);
    }

    #[test]
    fn odd_rows_stay_in_range() {
        let mut row = vec![0.0f32; 10];
        row[3] = f32::INFINITY;
        let lp = RowLogprobs::of(&row, 2);
        assert_eq!(lp.top[0], (3, 0.0));
        assert_eq!(lp.token(3, f32::INFINITY).logprob, 0.0);
        assert_eq!(lp.token(1, 0.0).logprob, f32::NEG_INFINITY);
        // A NaN logit is no alternative and has no log-probability; the
        // others keep theirs.
        let lp = RowLogprobs::of(&[f32::NAN, 1.0, 0.5], 2);
        assert_eq!(lp.top.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1]);
        assert!(lp.token(0, f32::NAN).logprob.is_nan());
        let p1 = lp.token(1, 1.0).logprob;
        assert!(p1 < 0.0 && p1 > -1.0, "{p1}");
        // No finite logit: no distribution.
        let lp = RowLogprobs::of(&[f32::NEG_INFINITY; 4], 1);
        assert!(lp.token(0, f32::NEG_INFINITY).logprob.is_nan());
        // One token: certain.
        let lp = RowLogprobs::of(&[2.5], 5);
        assert_eq!(lp.top, vec![(0, 0.0)]);
        assert!(RowLogprobs::of(&[1.0, 2.0], 0).top.is_empty());
    }
}
