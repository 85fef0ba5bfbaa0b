//! Choosing the next token from the logits.
//!
//! The order is llama.cpp's: repetition penalty over the last `repeat_last_n`
//! tokens, then top-k, top-p, min-p, temperature, and a draw from the
//! resulting distribution with a seeded generator. Temperature 0 is greedy:
//! the penalty applies, then the highest logit wins (lowest id on a tie).
//! The same seed and settings give the same tokens.
//!
//! # Cost
//!
//! A vocabulary of 262k tokens must not cost milliseconds per token, so
//! nothing sorts it:
//! - top-k is one pass that keeps a small candidate set
//!   ([`worker_compute::select::top_k`]);
//! - min-p is a filter, since its floor depends only on the largest
//!   probability;
//! - top-p sorts only a short prefix of the most likely tokens when that
//!   reaches the mass, and cuts a flat distribution by a weighted
//!   quickselect ([`nucleus`]);
//! - the draw walks the survivors in order of token id, with weights
//!   `exp((logit - max) / temperature)`.
//!
//! # Candidates from the backend
//!
//! When a request keeps its `top_k` best tokens, the logits it needs are
//! the `top_k` largest, plus one per token the repetition penalty lowers (a
//! penalty above 1 only lowers logits, so the `k` best after it are among
//! the `k + n` best before it). [`Sampler::want`] says how many;
//! [`Sampler::sample_top`] takes them, sorted as the backend's
//! [`top_k_rows`](worker_compute::Backend::top_k_rows) sorts them, and
//! picks the token [`Sampler::sample`] would pick from the whole row. On a
//! GPU the vocabulary's logits then never leave the device.

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use worker_compute::draw;
use worker_compute::select::{self, before};

mod adjust;
mod nucleus;

pub use adjust::Adjustments;

/// Top candidates that top-p looks within before it weighs the whole row.
const NUCLEUS_TRY: usize = 1024;

pub use worker_common::job::SamplingParams;

/// What a sampler needs from the logits of its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Only the largest logit's id (greedy, no penalty).
    Argmax,
    /// The `n` largest logits with their ids ([`Sampler::sample_top`]).
    Top(usize),
    /// A draw from the whole row at the sampler's temperature, made where
    /// the logits are ([`Sampler::draw_params`], `Backend::draw_rows`).
    Draw,
    /// The whole row ([`Sampler::sample`]).
    Logits,
}

impl Want {
    /// What a step needs to serve both `self` and `other`.
    pub fn and(self, other: Want) -> Want {
        match (self, other) {
            (Want::Logits, _) | (_, Want::Logits) => Want::Logits,
            (Want::Argmax, Want::Argmax) => Want::Argmax,
            // A draw at temperature 0 is the argmax.
            (Want::Draw, Want::Draw | Want::Argmax) | (Want::Argmax, Want::Draw) => Want::Draw,
            (Want::Draw, Want::Top(_)) | (Want::Top(_), Want::Draw) => Want::Logits,
            (Want::Argmax, Want::Top(n)) | (Want::Top(n), Want::Argmax) => Want::Top(n.max(1)),
            (Want::Top(a), Want::Top(b)) => Want::Top(a.max(b)),
        }
    }
}

/// What a forward step left for its logits rows: whichever of the ids, the
/// top candidates or the whole rows its [`Want`] asked for.
#[derive(Debug)]
pub struct StepOutput {
    pub(crate) want: Want,
    pub(crate) vocab: usize,
    pub(crate) ids: Vec<u32>,
    pub(crate) top: Vec<(u32, f32)>,
    pub(crate) logits: Vec<f32>,
    /// For [`Want::Draw`]: each row's temperature and uniform number, set
    /// before the step ([`StepOutput::set_draws`]).
    pub(crate) temps: Vec<f32>,
    pub(crate) us: Vec<f32>,
    /// Read the whole rows whatever `want` is ([`StepOutput::keep_logits`]).
    pub(crate) keep_logits: bool,
    /// Whether `logits` holds this step's rows.
    pub(crate) has_logits: bool,
}

impl StepOutput {
    /// An empty output for rows of `vocab` logits.
    pub fn new(vocab: usize) -> Self {
        StepOutput {
            want: Want::Logits,
            vocab,
            ids: Vec::new(),
            top: Vec::new(),
            logits: Vec::new(),
            temps: Vec::new(),
            us: Vec::new(),
            keep_logits: false,
            has_logits: false,
        }
    }

    /// Whether the next steps also read the whole logits rows, beside what
    /// their [`Want`] asks (for log-probabilities; the picks stay where
    /// the want puts them).
    pub fn keep_logits(&mut self, keep: bool) {
        self.keep_logits = keep;
    }

    /// The draw parameters of the next step's rows, in row order, as their
    /// samplers give them ([`Sampler::draw_params`]).
    pub fn set_draws(&mut self, draws: impl IntoIterator<Item = (f32, f32)>) {
        self.temps.clear();
        self.us.clear();
        for (t, u) in draws {
            self.temps.push(t);
            self.us.push(u);
        }
    }

    /// The next token of logits row `row`, chosen by `sampler`. The
    /// sampler's own [`Want`] must have been part of the step's.
    pub fn pick(&mut self, row: usize, sampler: &mut Sampler) -> u32 {
        match self.want {
            Want::Argmax | Want::Draw => self.ids.get(row).copied().unwrap_or(0),
            Want::Top(n) => {
                let n = n.min(self.vocab);
                let top = self.top.get(row * n..(row + 1) * n).unwrap_or(&[]);
                sampler.sample_top(top)
            }
            Want::Logits => {
                let v = self.vocab;
                let end = ((row + 1) * v).min(self.logits.len());
                let start = (row * v).min(end);
                sampler.sample(&mut self.logits[start..end])
            }
        }
    }

    /// The whole logits row `row` to change before the choice (a
    /// constraint's mask), when the step read them.
    pub fn logits_mut(&mut self, row: usize) -> Option<&mut [f32]> {
        let v = self.vocab;
        if self.has_logits {
            self.logits.get_mut(row * v..(row + 1) * v)
        } else {
            None
        }
    }

    /// The top candidates of row `row`, when the step read them, to
    /// change before the choice (a processor's adjustments).
    pub fn top_mut(&mut self, row: usize) -> Option<&mut [(u32, f32)]> {
        let Want::Top(n) = self.want else {
            return None;
        };
        let n = n.min(self.vocab);
        self.top.get_mut(row * n..(row + 1) * n)
    }

    /// What the last step read back.
    pub fn read(&self) -> Want {
        self.want
    }

    /// The whole logits row `row`, when the step read them.
    pub fn logits(&self, row: usize) -> Option<&[f32]> {
        let v = self.vocab;
        self.has_logits
            .then(|| self.logits.get(row * v..(row + 1) * v))
            .flatten()
    }
}

/// A sampler for one sequence.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    seed: u64,
    rng: Pcg64Mcg,
    /// Bias and penalties, applied before the cuts.
    adjust: Adjustments,
    candidates: Vec<(u32, f32)>,
    /// The draw's weights, one per candidate.
    weights: Vec<f32>,
    /// Top-p's working memory.
    nucleus: nucleus::Scratch,
    /// Buffers of the whole-row draw.
    scratch: draw::Scratch,
}

impl Sampler {
    /// A sampler; `prompt` seeds the repetition window.
    pub fn new(params: SamplingParams, prompt: &[u32]) -> Self {
        let seed = params.seed.unwrap_or_else(rand::random);
        Sampler {
            rng: Pcg64Mcg::seed_from_u64(seed),
            seed,
            adjust: Adjustments::new(&params, prompt),
            candidates: Vec::new(),
            weights: Vec::new(),
            nucleus: nucleus::Scratch::default(),
            scratch: draw::Scratch::default(),
            params,
        }
    }

    /// A sampler with the cuts and the draw of `params` alone, and the
    /// request's bias and penalties as a logits processor of their own
    /// that the caller applies first (the same choices as
    /// [`Sampler::new`]).
    pub fn split(params: SamplingParams, prompt: &[u32]) -> (Self, Adjustments) {
        let adjust = Adjustments::new(&params, prompt);
        let cuts = SamplingParams {
            logit_bias: Vec::new(),
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            ..params
        };
        (Sampler::new(cuts, &[]), adjust)
    }

    /// The seed in use.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Records a token (for the repetition penalty).
    pub fn accept(&mut self, token: u32) {
        self.adjust.accept(token);
    }

    /// Whether the choice is the plain argmax of the logits (temperature 0,
    /// no penalty, no bias): the engine can then let the backend pick.
    pub fn is_greedy(&self) -> bool {
        draw::greedy(self.params.temperature) && !self.adjust.adjusts()
    }

    /// What the next choice needs from the logits.
    pub fn want(&self) -> Want {
        let p = &self.params;
        if self.is_greedy() {
            return Want::Argmax;
        }
        let keep = if draw::greedy(p.temperature) {
            Some(1)
        } else if p.top_k > 0 {
            Some(p.top_k)
        } else if !self.adjust.adjusts() && p.top_p >= 1.0 && p.min_p <= 0.0 {
            // Nothing cut: the whole row at the temperature.
            return Want::Draw;
        } else {
            None
        };
        self.adjust.widen(keep)
    }

    /// The ids whose logits the penalties and biases change before the
    /// next choice, sorted.
    pub fn adjusted_ids(&self) -> Vec<u32> {
        self.adjust.adjusted_ids()
    }

    /// Picks the next token from the whole row; `logits` may be modified.
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        self.adjust.apply_row(logits);
        if draw::greedy(self.params.temperature) {
            return argmax(logits);
        }
        let k = self.params.top_k;
        let p = &self.params;
        if (k == 0 || k >= logits.len()) && p.top_p >= 1.0 && p.min_p <= 0.0 {
            // Nothing cut: draw from the whole row, in order of id.
            return self.draw_all(logits);
        }
        let mut c = std::mem::take(&mut self.candidates);
        if (k == 0 || k >= logits.len())
            && let Some(id) = self.nucleus_in_top(logits, &mut c)
        {
            self.candidates = c;
            return id;
        }
        if k > 0 && k < logits.len() {
            select::top_k(logits, k, &mut c);
            // The draw walks token ids in order.
            c.sort_unstable_by_key(|e| e.0);
        } else {
            c.clear();
            c.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        }
        let id = self.finish(&mut c);
        self.candidates = c;
        id
    }

    /// Picks the next token from the largest logits of the row, sorted as
    /// [`worker_compute::select::top_k`] sorts them: at least as many as
    /// [`Sampler::want`] asked for (or the whole row when it is shorter).
    /// The choice is the one [`Sampler::sample`] makes from the whole row.
    pub fn sample_top(&mut self, top: &[(u32, f32)]) -> u32 {
        let mut c = std::mem::take(&mut self.candidates);
        c.clear();
        c.extend_from_slice(top);
        let adjusted = self.adjust.adjusts();
        self.adjust.apply_top(&mut c);
        let id = if draw::greedy(self.params.temperature) {
            // The largest logit, the lowest id among equal ones: argmax.
            c.iter()
                .fold(None::<(u32, f32)>, |best, &e| match best {
                    Some(b) if !(e.1 > b.1 || (e.1 == b.1 && e.0 < b.0)) => Some(b),
                    _ => Some(e),
                })
                .map_or(0, |b| b.0)
        } else {
            let k = self.params.top_k;
            if adjusted || (k > 0 && k < c.len()) {
                c.sort_unstable_by(before);
            }
            if k > 0 && k < c.len() {
                c.truncate(k);
            }
            c.sort_unstable_by_key(|e| e.0);
            self.finish(&mut c)
        };
        self.candidates = c;
        id
    }

    /// The draw over a whole row ([`worker_compute::draw::draw`]).
    fn draw_all(&mut self, logits: &[f32]) -> u32 {
        let u = self.rng.random::<f32>();
        draw::draw(logits, self.params.temperature, u, &mut self.scratch)
    }

    /// What a draw on the device needs for this sampler's next token: its
    /// temperature (0: the argmax) and its uniform number, taken from the
    /// sampler's generator as [`Sampler::sample`] would take it.
    pub fn draw_params(&mut self) -> (f32, f32) {
        if draw::greedy(self.params.temperature) {
            (0.0, 0.0)
        } else {
            (self.params.temperature, self.rng.random::<f32>())
        }
    }

    /// Top-p over the whole row when the nucleus lies within the
    /// [`NUCLEUS_TRY`] most likely tokens, as it does for a peaked
    /// distribution: the row's total weight and its top candidates take
    /// three vectorizable or one-compare passes, instead of weighing and
    /// cutting every token. `None` (nothing drawn) when top-p does not
    /// apply or the nucleus is larger.
    fn nucleus_in_top(&mut self, logits: &[f32], c: &mut Vec<(u32, f32)>) -> Option<u32> {
        let p = &self.params;
        if p.top_p >= 1.0 || logits.len() <= 4 * NUCLEUS_TRY {
            return None;
        }
        let max = draw::max(logits);
        if !max.is_finite() {
            return None;
        }
        // The total as `finish` computes it, so the mass is the same.
        let total = draw::exp_sum(logits, max);
        if !total.is_finite() || total <= 0.0 {
            return None;
        }
        select::top_k(logits, NUCLEUS_TRY, c);
        // A NaN sorts first and is not the maximum: leave it to `finish`.
        if c.first().map(|e| e.1) != Some(max) {
            return None;
        }
        let mass = f64::from(p.top_p) * total;
        let mut acc = 0.0f64;
        let mut keep = None;
        for (i, e) in c.iter().enumerate() {
            let w = draw::exp_neg(e.1 - max);
            // Min-p drops a tail of this order (the first always stays),
            // and everything past the top candidates with it: the nucleus
            // is what is left.
            if i > 0 && w < p.min_p {
                keep = Some(i);
                break;
            }
            acc += f64::from(w);
            if acc >= mass {
                keep = Some(i + 1);
                break;
            }
        }
        let keep = keep?;
        c.truncate(keep);
        c.sort_unstable_by_key(|e| e.0);
        let first = c[0];
        Some(self.draw_from(c, max, first))
    }

    /// Top-p, min-p, temperature and the draw over the candidates left by
    /// top-k, in order of id. `c` must not be empty.
    fn finish(&mut self, c: &mut Vec<(u32, f32)>) -> u32 {
        let p = &self.params;
        let Some(&first) = c.first() else { return 0 };
        let max = c.iter().fold(f32::NEG_INFINITY, |m, e| m.max(e.1));
        if p.top_p < 1.0 || p.min_p > 0.0 {
            // Probabilities at temperature 1, relative to the largest.
            let w = &mut self.weights;
            w.clear();
            w.extend(c.iter().map(|e| draw::exp_neg(e.1 - max)));
            let total = draw::sum(w);
            if p.min_p > 0.0 {
                // The floor is `min_p` times the largest probability, whose
                // relative weight is 1.
                let keep = c.iter().position(|e| e.1 == max);
                let kept = |i: usize, x: f32| x >= p.min_p || Some(i) == keep;
                let mut i = 0;
                c.retain(|_| {
                    i += 1;
                    kept(i - 1, w[i - 1])
                });
                let mut i = 0;
                w.retain(|&x| {
                    i += 1;
                    kept(i - 1, x)
                });
            }
            if p.top_p < 1.0 && total.is_finite() && total > 0.0 {
                let mass = f64::from(p.top_p) * total;
                if let Some(last) = nucleus::boundary(c, w, mass, &mut self.nucleus) {
                    c.retain(|e| nucleus::key(e.0, e.1) <= last);
                }
            }
        }
        self.draw_from(c, max, first)
    }

    /// The draw at the temperature over `c` (in order of id, not empty),
    /// whose largest logit is `max`.
    fn draw_from(&mut self, c: &[(u32, f32)], max: f32, first: (u32, f32)) -> u32 {
        if max == f32::INFINITY {
            // An infinite logit outweighs everything: the first one.
            return c.iter().copied().min_by(before).unwrap_or(first).0;
        }
        let inv_t = 1.0 / self.params.temperature;
        let w = &mut self.weights;
        w.clear();
        w.extend(c.iter().map(|e| draw::exp_neg((e.1 - max) * inv_t)));
        let total = draw::sum(w);
        if !total.is_finite() || total <= 0.0 {
            // NaN logits: no distribution to draw from.
            return c.iter().copied().min_by(before).unwrap_or(first).0;
        }
        let r = f64::from(self.rng.random::<f32>()) * total;
        let mut cum = 0.0;
        for (e, &x) in c.iter().zip(w.iter()) {
            cum += f64::from(x);
            if r < cum {
                return e.0;
            }
        }
        c.last().map_or(first.0, |e| e.0)
    }
}

/// Index of the largest logit (the lowest index on a tie).
pub fn argmax(logits: &[f32]) -> u32 {
    draw::argmax(logits)
}

#[cfg(test)]
mod tests;
