//! Constraints on what a request may generate, as logits processors.
//!
//! A request's sampler ([`crate::Sampler`]) carries llama.cpp's chain:
//! logit bias, penalties, the cuts and the draw. Those know which tokens
//! they change, so a step can read back only the top candidates. A
//! constraint (JSON mode today, a schema grammar later) may forbid any
//! token, so it works on the whole row: it says what the step must read
//! back ([`LogitsProcessor::want`]), masks the row before the sampler
//! chooses, and follows the chosen tokens.

use crate::json_mode::{JsonState, JsonVocab};
use crate::sampling::Want;
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

    /// Whether it may change any logit (rather than a known few): the
    /// log-probabilities then keep the whole raw row.
    fn changes_any(&self) -> bool;

    /// Masks the whole row; [`Verdict::Stuck`] when nothing is allowed.
    fn process(&mut self, row: &mut [f32]) -> Verdict;

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

    fn changes_any(&self) -> bool {
        true
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
