//! Choosing the next token from the logits.
//!
//! The order is llama.cpp's: repetition penalty over the last `repeat_last_n`
//! tokens, then top-k, top-p, min-p, temperature, and a draw from the
//! resulting distribution with a seeded generator. Temperature 0 is greedy:
//! the penalty applies, then the highest logit wins (lowest id on a tie).
//! The same seed and settings give the same tokens.

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use std::collections::VecDeque;

/// Sampling settings of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy; higher flattens the distribution.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p` (1 = all).
    pub top_p: f32,
    /// Drop tokens below `min_p` times the most likely one's probability.
    pub min_p: f32,
    /// Penalize tokens seen in the last `repeat_last_n` (1 = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// The generator's seed; `None` picks a random one (reported back).
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }
}

/// A sampler for one sequence.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    seed: u64,
    rng: Pcg64Mcg,
    recent: VecDeque<u32>,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler; `prompt` seeds the repetition window.
    pub fn new(params: SamplingParams, prompt: &[u32]) -> Self {
        let seed = params.seed.unwrap_or_else(rand::random);
        let mut s = Sampler {
            rng: Pcg64Mcg::seed_from_u64(seed),
            seed,
            recent: VecDeque::with_capacity(params.repeat_last_n),
            candidates: Vec::new(),
            params,
        };
        for &t in prompt {
            s.accept(t);
        }
        s
    }

    /// The seed in use.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Records a token (for the repetition penalty).
    pub fn accept(&mut self, token: u32) {
        if self.params.repeat_last_n == 0 {
            return;
        }
        if self.recent.len() == self.params.repeat_last_n {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
    }

    /// Whether the choice is the plain argmax of the logits (temperature 0,
    /// no repetition penalty): the engine can then let the backend pick.
    pub fn is_greedy(&self) -> bool {
        self.params.temperature <= 0.0 && self.params.repeat_penalty == 1.0
    }

    /// Picks the next token; `logits` may be modified.
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        let p = &self.params;
        if p.repeat_penalty != 1.0 {
            let mut seen: Vec<u32> = self.recent.iter().copied().collect();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repeat_penalty
                    } else {
                        *l * p.repeat_penalty
                    };
                }
            }
        }
        if p.temperature <= 0.0 {
            return argmax(logits);
        }

        let c = &mut self.candidates;
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < c.len() {
            c.select_nth_unstable_by(p.top_k - 1, by_logit);
            c.truncate(p.top_k);
        }
        c.sort_unstable_by(by_logit);
        softmax(c);
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = c.len();
            for (i, &(_, prob)) in c.iter().enumerate() {
                cum += prob;
                if cum >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            c.truncate(keep.max(1));
        }
        if p.min_p > 0.0 && !c.is_empty() {
            let floor = c[0].1 * p.min_p;
            let keep = c.iter().take_while(|&&(_, prob)| prob >= floor).count();
            c.truncate(keep.max(1));
        }
        // Temperature on the surviving logits: back to logits, scale, renormalize.
        for e in c.iter_mut() {
            e.1 = e.1.max(f32::MIN_POSITIVE).ln() / p.temperature;
        }
        softmax(c);
        let r: f32 = self.rng.random();
        let mut cum = 0.0;
        for &(id, prob) in c.iter() {
            cum += prob;
            if r < cum {
                return id;
            }
        }
        c.last().map_or(0, |e| e.0)
    }
}

/// Index of the largest logit (the lowest index on a tie).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Turns the second field of each entry from logits into probabilities.
fn softmax(c: &mut [(u32, f32)]) {
    let max = c.iter().fold(f32::NEG_INFINITY, |m, e| m.max(e.1));
    let mut sum = 0.0;
    for e in c.iter_mut() {
        e.1 = (e.1 - max).exp();
        sum += e.1;
    }
    for e in c.iter_mut() {
        e.1 /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_max_and_penalty_changes_it() {
        let mut s = Sampler::new(SamplingParams::greedy(), &[]);
        assert_eq!(s.sample(&mut [0.1, 2.0, 1.9]), 1);
        let params = SamplingParams {
            repeat_penalty: 1.5,
            ..SamplingParams::greedy()
        };
        let mut s = Sampler::new(params, &[1]);
        assert_eq!(s.sample(&mut [0.1, 2.0, 1.9]), 2);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = Sampler::new(
                SamplingParams {
                    seed: Some(seed),
                    top_k: 0,
                    top_p: 1.0,
                    min_p: 0.0,
                    temperature: 1.0,
                    ..Default::default()
                },
                &[],
            );
            (0..20)
                .map(|_| s.sample(&mut logits.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(
            SamplingParams {
                top_k: 1,
                temperature: 1.5,
                seed: Some(1),
                ..Default::default()
            },
            &[],
        );
        for _ in 0..10 {
            assert_eq!(s.sample(&mut [0.0, 0.5, 3.0, 2.9]), 2);
        }
    }

    #[test]
    fn min_p_and_top_p_cut_the_tail() {
        let mut s = Sampler::new(
            SamplingParams {
                top_k: 0,
                top_p: 1.0,
                min_p: 0.5,
                temperature: 1.0,
                seed: Some(3),
                ..Default::default()
            },
            &[],
        );
        for _ in 0..50 {
            let t = s.sample(&mut [5.0, 4.9, 0.0, -1.0]);
            assert!(t == 0 || t == 1);
        }
    }
}
