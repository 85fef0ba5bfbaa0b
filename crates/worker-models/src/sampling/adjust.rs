//! Logit bias and the repetition, frequency and presence penalties, in
//! llama.cpp's order: the bias is added, then the repetition penalty
//! scales a recent token's logit away from zero's side, then the frequency
//! and presence penalties subtract. They change a known few tokens, so a
//! step can still read back only the top candidates ([`Adjustments::want`]).

use super::{SamplingParams, Want};
use std::collections::VecDeque;

/// A request's bias and penalties, with the window of recent tokens the
/// penalties look at.
#[derive(Debug, Clone, Default)]
pub struct Adjustments {
    bias: Vec<(u32, f32)>,
    repeat_penalty: f32,
    frequency_penalty: f32,
    presence_penalty: f32,
    repeat_last_n: usize,
    recent: VecDeque<u32>,
}

impl Adjustments {
    /// The adjustments of `params`; `prompt` seeds the window.
    pub fn new(params: &SamplingParams, prompt: &[u32]) -> Self {
        let mut a = Adjustments {
            bias: params.logit_bias.clone(),
            repeat_penalty: params.repeat_penalty,
            frequency_penalty: params.frequency_penalty,
            presence_penalty: params.presence_penalty,
            repeat_last_n: params.repeat_last_n,
            recent: VecDeque::with_capacity(params.repeat_last_n),
        };
        for &t in prompt {
            a.accept(t);
        }
        a
    }

    /// Records a token (for the penalties).
    pub fn accept(&mut self, token: u32) {
        if self.repeat_last_n == 0 {
            return;
        }
        if self.recent.len() == self.repeat_last_n {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
    }

    fn penalizes(&self) -> bool {
        self.repeat_penalty != 1.0 || self.frequency_penalty != 0.0 || self.presence_penalty != 0.0
    }

    /// Whether penalties or biases change logits before the choice.
    pub fn adjusts(&self) -> bool {
        self.penalizes() || !self.bias.is_empty()
    }

    /// Whether an adjustment may raise a logit, so that a token outside
    /// the top candidates could win.
    fn may_raise(&self) -> bool {
        self.repeat_penalty < 1.0
            || self.frequency_penalty < 0.0
            || self.presence_penalty < 0.0
            || self.bias.iter().any(|&(_, b)| b > 0.0)
    }

    /// What a choice that needs `keep` top candidates (`None`: the whole
    /// row) needs once these adjustments apply first.
    pub fn widen(&self, keep: Option<usize>) -> Want {
        match keep {
            None => Want::Logits,
            Some(keep) if !self.adjusts() => Want::Top(keep),
            // Any token may enter.
            Some(_) if self.may_raise() => Want::Logits,
            // Adjustments only lower logits: the `keep` best after them are
            // among the `keep + n` best before, `n` the tokens lowered.
            Some(keep) => Want::Top(keep + self.adjusted_ids().len()),
        }
    }

    /// What a choice that wanted `want` needs once these adjustments apply
    /// first: a draw on the device or an argmax sees the raw logits, so it
    /// becomes the top candidates or the whole row.
    pub fn want(&self, want: Want) -> Want {
        if !self.adjusts() {
            return want;
        }
        match want {
            Want::Argmax => self.widen(Some(1)),
            Want::Top(n) => self.widen(Some(n)),
            Want::Draw | Want::Logits => Want::Logits,
        }
    }

    /// The distinct recent ids the penalties apply to, sorted, with how
    /// often each occurs in the window.
    fn penalized(&self) -> Vec<(u32, u32)> {
        if !self.penalizes() {
            return Vec::new();
        }
        let mut seen: Vec<u32> = self.recent.iter().copied().collect();
        seen.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::new();
        for id in seen {
            match out.last_mut() {
                Some(last) if last.0 == id => last.1 += 1,
                _ => out.push((id, 1)),
            }
        }
        out
    }

    fn penalize(&self, logit: &mut f32, count: u32) {
        if self.repeat_penalty != 1.0 {
            let r = self.repeat_penalty;
            *logit = if *logit > 0.0 { *logit / r } else { *logit * r };
        }
        *logit -= count as f32 * self.frequency_penalty + self.presence_penalty;
    }

    /// The ids whose logits the penalties and biases change before the
    /// next choice, sorted.
    pub fn adjusted_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.penalized().iter().map(|e| e.0).collect();
        ids.extend(self.bias.iter().map(|e| e.0));
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn bias(&self, id: u32) -> Option<f32> {
        let b = &self.bias;
        b.binary_search_by_key(&id, |e| e.0).ok().map(|i| b[i].1)
    }

    /// Applies them to a whole row.
    pub fn apply_row(&self, logits: &mut [f32]) {
        for &(t, b) in &self.bias {
            if let Some(l) = logits.get_mut(t as usize) {
                *l += b;
            }
        }
        for (t, n) in self.penalized() {
            if let Some(l) = logits.get_mut(t as usize) {
                self.penalize(l, n);
            }
        }
    }

    /// Applies them to top candidates (their order may change).
    pub fn apply_top(&self, candidates: &mut [(u32, f32)]) {
        if !self.adjusts() {
            return;
        }
        let penalized = self.penalized();
        for e in candidates.iter_mut() {
            if let Some(b) = self.bias(e.0) {
                e.1 += b;
            }
            if let Ok(i) = penalized.binary_search_by_key(&e.0, |p| p.0) {
                self.penalize(&mut e.1, penalized[i].1);
            }
        }
    }
}
