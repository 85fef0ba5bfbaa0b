//! What changes a request's logits before its sampler chooses, as a list
//! of logits processors: a constraint (JSON mode today, a schema grammar
//! later), then the logit bias and penalties ([`crate::Adjustments`]).
//! Each says what the step must read back for its row
//! ([`LogitsProcessor::want`]): the bias and penalties change a known few
//! tokens, so the top candidates may do; a constraint may forbid any token,
//! so it needs the whole row. The sampler then cuts and draws.

use crate::json_mode::{JsonState, JsonVocab};
use crate::sampling::{Adjustments, Want};
use std::sync::Arc;

/// Why a constraint ends the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Generation goes on.
    Continue,
    /// The constrained value is complete: nothing may follow.
    Complete,
    /// No token can continue (the answer ends unfinished).
    Stuck,
}

/// A change to a logits row before the sampler chooses.
pub trait LogitsProcessor: Send + std::fmt::Debug {
    /// What the step must read back for this row, given what the sampler
    /// alone would need.
    fn want(&self, sampler: Want) -> Want;

    /// The tokens whose logits it changes, sorted; `None`: any (the
    /// log-probabilities then keep the whole raw row).
    fn changed_ids(&self) -> Option<Vec<u32>>;

    /// Changes the whole row; [`Verdict::Stuck`] when nothing is allowed.
    fn process(&mut self, row: &mut [f32]) -> Verdict;

    /// Changes the top candidates (their order may change), when its
    /// [`LogitsProcessor::want`] let the step read only those.
    fn process_top(&mut self, _top: &mut [(u32, f32)]) {}

    /// Follows the chosen token; [`Verdict::Stuck`] when it does not fit
    /// (a masked row makes that impossible), [`Verdict::Complete`] when the
    /// constrained value is closed.
    fn accept(&mut self, id: u32) -> Verdict;
}

/// JSON mode: the output is one JSON object ([`JsonState`]), token by
/// token through [`JsonVocab`]'s mask.
#[derive(Debug)]
pub struct JsonObject {
    state: JsonState,
    vocab: Arc<JsonVocab>,
    allowed: Vec<bool>,
}

impl JsonObject {
    /// A fresh constraint over the token texts of `vocab`.
    pub fn new(vocab: Arc<JsonVocab>) -> Self {
        JsonObject {
            state: JsonState::default(),
            vocab,
            allowed: Vec::new(),
        }
    }
}

impl LogitsProcessor for JsonObject {
    fn want(&self, _sampler: Want) -> Want {
        Want::Logits
    }

    fn changed_ids(&self) -> Option<Vec<u32>> {
        None
    }

    fn process(&mut self, row: &mut [f32]) -> Verdict {
        if self.vocab.mask(&self.state, row, &mut self.allowed) {
            Verdict::Continue
        } else {
            tracing::warn!(
                "JSON mode: no token can continue the object; the answer ends unfinished"
            );
            Verdict::Stuck
        }
    }

    fn accept(&mut self, id: u32) -> Verdict {
        if !self.state.push_bytes(self.vocab.bytes(id)) {
            tracing::warn!(
                token = id,
                "JSON mode: a chosen token does not fit; the answer ends unfinished"
            );
            Verdict::Stuck
        } else if self.state.is_complete() {
            Verdict::Complete
        } else {
            Verdict::Continue
        }
    }
}

impl LogitsProcessor for Adjustments {
    fn want(&self, sampler: Want) -> Want {
        Adjustments::want(self, sampler)
    }

    fn changed_ids(&self) -> Option<Vec<u32>> {
        Some(self.adjusted_ids())
    }

    fn process(&mut self, row: &mut [f32]) -> Verdict {
        self.apply_row(row);
        Verdict::Continue
    }

    fn process_top(&mut self, top: &mut [(u32, f32)]) {
        self.apply_top(top);
    }

    fn accept(&mut self, id: u32) -> Verdict {
        Adjustments::accept(self, id);
        Verdict::Continue
    }
}
