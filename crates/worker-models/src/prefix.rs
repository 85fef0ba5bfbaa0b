//! Prompt caching: a new request that starts with the tokens a sequence's
//! KV cache already holds skips computing them again.
//!
//! Multi-turn chats send the whole conversation every turn, and requests
//! often share a system prompt; both then compute only what is new. The
//! scheduler keeps, per sequence slot, the tokens whose K and V rows are
//! stored (positions `0..n`), gives a new request the free slot whose
//! tokens share the longest prefix with its prompt, and starts its prefill
//! after that prefix. When another slot, even a busy one, holds a longer
//! prefix (at least [`MIN_COPY`] tokens more), its rows are copied over
//! (`Backend::kv_copy`). The backends' caches are indexed by position and
//! a request writes every later position before reading it.
//!
//! A recurrent layer (a gated delta net) keeps one state per sequence,
//! the state after all the tokens it has seen, which cannot be taken back
//! to an earlier position. So a slot of a model with such layers can
//! supply either everything it holds (a request that extends the whole of
//! it) or the prompt of its last request, whose state the scheduler kept
//! when that prompt was computed (`Backend::state_save`; the next turn of a
//! conversation extends its last prompt even when the reply it rendered
//! differs from the tokens generated); anything else is computed afresh.
//! A busy slot's state is copied the same way: all it holds, or the prompt
//! it kept (a shared system prompt while its first user's answer streams).
//!
//! A layer with a sliding window keeps its positions in a ring of
//! `window + max_batch` rows (position `p` in row `p % capacity`), so a
//! longer earlier sequence may have overwritten the rows a new request's
//! first tokens look back at. A [`Ring`] per sequence and window records
//! which position each row holds now, and [`reusable`] allows reuse only
//! when every row looked back at still holds its own position.

use worker_compute::KvSpec;

/// Fewest tokens worth copying from another sequence's cache rather than
/// computing (a copy is a memory move per layer).
pub const MIN_COPY: usize = 16;

/// Which position each row of one sequence's ring holds, for the layers of
/// one window size.
#[derive(Debug, Clone)]
pub struct Ring {
    window: usize,
    /// Per row: the position written there last (`u32::MAX`: none known).
    rows: Vec<u32>,
}

impl Ring {
    /// The rings a sequence needs under `spec`: one per window size whose
    /// ring is shorter than the context (longer ones never wrap).
    pub fn for_spec(spec: &KvSpec) -> Vec<Ring> {
        let mut windows: Vec<u32> = spec.layer_windows.iter().flatten().copied().collect();
        windows.sort_unstable();
        windows.dedup();
        windows
            .into_iter()
            .filter_map(|w| {
                let capacity = spec.layer_capacity(Some(w));
                (capacity < spec.n_ctx).then(|| Ring {
                    window: w as usize,
                    rows: vec![u32::MAX; capacity],
                })
            })
            .collect()
    }

    /// Position `pos` was written.
    pub fn write(&mut self, pos: usize) {
        let n = self.rows.len();
        if let Some(r) = self.rows.get_mut(pos % n.max(1)) {
            *r = u32::try_from(pos).unwrap_or(u32::MAX);
        }
    }

    /// Nothing is known any more (a failed step).
    pub fn forget(&mut self) {
        self.rows.fill(u32::MAX);
    }

    /// Whether every position in `from..to` is still in its row.
    fn holds(&self, from: usize, to: usize) -> bool {
        let n = self.rows.len().max(1);
        (from..to).all(|q| self.rows.get(q % n).is_some_and(|&p| p as usize == q))
    }
}

/// How many leading tokens of `prompt` rows computed for `tokens` could
/// supply, were they all still held: the common prefix, less the prompt's
/// last token (it must run to give the logits of the first choice).
pub fn shareable(tokens: &[u32], prompt: &[u32]) -> usize {
    let common = tokens
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count();
    common.min(prompt.len().saturating_sub(1))
}

/// How many leading tokens of `prompt` a sequence whose cache holds the
/// rows of `cached` (positions `0..cached.len()`, each computed after the
/// ones before it) can supply: the common prefix, less one (the last
/// prompt token must run to give the logits of the first choice), and 0
/// when one of the sequence's `rings` no longer holds a row the first new
/// token attends to. Later tokens look back less far, and a batch writes
/// at most `max_batch` rows ahead, which the ring leaves room for.
pub fn reusable(cached: &[u32], prompt: &[u32], rings: &[Ring]) -> usize {
    let reuse = shareable(cached, prompt);
    if reuse == 0 {
        return 0;
    }
    for r in rings {
        let first = (reuse + 1).saturating_sub(r.window);
        if !r.holds(first, reuse) {
            return 0;
        }
    }
    reuse
}

/// Where a new request goes ([`PromptCache::place`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The free slot.
    pub seq: usize,
    /// The prefix of the prompt it holds already.
    pub own: usize,
    /// A busy slot holding a longer prefix, and that prefix's length.
    pub copy: Option<(usize, usize)>,
    /// The prefix is the slot's kept recurrent state, which must be made
    /// live again before the request runs.
    pub restore: bool,
}

/// What every slot's KV cache holds: per slot, the tokens whose rows it
/// stores (positions `0..n`), the rings of its sliding-window layers, and
/// the step it last served (to reuse the least recent when no cache helps).
#[derive(Debug, Clone)]
pub struct PromptCache {
    tokens: Vec<Vec<u32>>,
    rings: Vec<Vec<Ring>>,
    last_used: Vec<u64>,
    steps: u64,
    /// Whether the model has recurrent layers (see the module's notes).
    recurrent: bool,
    /// Per slot: how many of its leading tokens its kept recurrent state
    /// holds, while those tokens are still its own.
    kept: Vec<Option<usize>>,
}

impl PromptCache {
    /// Empty bookkeeping for the slots of `spec`.
    pub fn new(spec: &KvSpec) -> Self {
        let n = spec.n_seq.max(1);
        PromptCache {
            tokens: vec![Vec::new(); n],
            rings: vec![Ring::for_spec(spec); n],
            last_used: vec![0; n],
            steps: 0,
            recurrent: spec.has_states(),
            kept: vec![None; n],
        }
    }

    /// How many leading tokens of `prompt` slot `seq` can supply
    /// ([`reusable`], and for a recurrent model only what a whole state
    /// holds: see [`PromptCache::reuse`]).
    pub fn reusable(&self, seq: usize, prompt: &[u32]) -> usize {
        self.reuse(seq, prompt).0
    }

    /// What slot `seq` can supply of `prompt`, and whether that is its kept
    /// recurrent state. A recurrent model's slot supplies all it holds or
    /// the prompt its state was kept at, whichever the prompt extends and
    /// is longer; else nothing.
    fn reuse(&self, seq: usize, prompt: &[u32]) -> (usize, bool) {
        let (Some(t), Some(r)) = (self.tokens.get(seq), self.rings.get(seq)) else {
            return (0, false);
        };
        let shared = reusable(t, prompt, r);
        if !self.recurrent {
            return (shared, false);
        }
        if shared > 0 && shared == t.len() {
            return (shared, false);
        }
        match self.kept.get(seq).copied().flatten() {
            Some(k) if k > 0 && k <= shared => (k, true),
            _ => (0, false),
        }
    }

    /// The most any slot, free or busy, can supply of `prompt` now.
    pub fn best_reusable(&self, prompt: &[u32]) -> usize {
        (0..self.tokens.len())
            .map(|s| self.reusable(s, prompt))
            .max()
            .unwrap_or(0)
    }

    /// The free slot for a request with `prompt` (`is_free` tells which
    /// are), the prefix it holds already, and, when a busy slot holds a
    /// longer one (by at least [`MIN_COPY`] tokens), that slot and its
    /// prefix to copy. The slot is the free one with the longest prefix,
    /// else the one used least recently; a copy goes to the least recently
    /// used one, so as not to overwrite another conversation's history.
    /// `None`: no slot is free.
    pub fn place(&self, prompt: &[u32], is_free: impl Fn(usize) -> bool) -> Option<Placement> {
        let n = self.tokens.len();
        let free = || (0..n).filter(|&s| is_free(s));
        let (best, own) = free()
            .map(|s| (s, self.reusable(s, prompt)))
            .max_by_key(|&(s, r)| (r, std::cmp::Reverse(self.last_used[s])))?;
        let busy = (0..n)
            .filter(|&s| !is_free(s))
            .map(|s| (s, self.reusable(s, prompt)))
            .max_by_key(|&(_, r)| r)
            .filter(|&(_, r)| r >= own + MIN_COPY);
        let Some(copy) = busy else {
            return Some(Placement {
                seq: best,
                own,
                copy: None,
                restore: self.reuse(best, prompt).1,
            });
        };
        let lru = free().min_by_key(|&s| self.last_used[s]).unwrap_or(best);
        let own = if lru == best {
            own
        } else {
            self.reusable(lru, prompt)
        };
        Some(Placement {
            seq: lru,
            own,
            copy: Some(copy),
            restore: false,
        })
    }

    /// Slot `seq`'s recurrent state was kept now, holding its first `n`
    /// tokens.
    pub fn kept(&mut self, seq: usize, n: usize) {
        if let Some(k) = self.kept.get_mut(seq) {
            *k = Some(n);
        }
    }

    /// Slot `seq`'s kept state no longer matches its tokens from `n` on.
    fn drop_kept_past(&mut self, seq: usize, n: usize) {
        if let Some(k) = self.kept.get_mut(seq)
            && k.is_some_and(|k| k > n)
        {
            *k = None;
        }
    }

    /// Slot `seq` keeps only its first `n` tokens (the rest will be
    /// written again).
    pub fn truncate(&mut self, seq: usize, n: usize) {
        if let Some(t) = self.tokens.get_mut(seq) {
            t.truncate(n);
        }
        self.drop_kept_past(seq, n);
    }

    /// Token `id` is fed to slot `seq` at position `pos`: what was held from
    /// `pos` on is replaced.
    pub fn feed(&mut self, seq: usize, pos: usize, id: u32) {
        if let Some(t) = self.tokens.get_mut(seq) {
            t.truncate(pos);
            t.push(id);
        }
        self.drop_kept_past(seq, pos);
    }

    /// A step wrote the rows of `written` (slot, position) pairs.
    pub fn stepped(&mut self, written: impl IntoIterator<Item = (usize, usize)>) {
        self.steps += 1;
        for (seq, pos) in written {
            if let Some(u) = self.last_used.get_mut(seq) {
                *u = self.steps;
            }
            for r in self.rings.get_mut(seq).into_iter().flatten() {
                r.write(pos);
            }
        }
    }

    /// Slot `to` now holds a copy of slot `from`'s first `n` rows.
    pub fn copied(&mut self, from: usize, to: usize, n: usize) {
        let (Some(tokens), Some(rings)) = (self.tokens.get(from), self.rings.get(from)) else {
            return;
        };
        let (tokens, rings) = (tokens[..n.min(tokens.len())].to_vec(), rings.clone());
        if to < self.tokens.len() {
            self.tokens[to] = tokens;
            self.rings[to] = rings;
            // What `to` kept was of its own earlier tokens.
            self.kept[to] = None;
        }
    }

    /// Nothing is known of slot `seq` any more (a failed copy).
    pub fn forget(&mut self, seq: usize) {
        if let Some(t) = self.tokens.get_mut(seq) {
            t.clear();
        }
        self.drop_kept_past(seq, 0);
        for r in self.rings.get_mut(seq).into_iter().flatten() {
            r.forget();
        }
    }

    /// Nothing is known of any slot (a failed step).
    pub fn forget_all(&mut self) {
        for seq in 0..self.tokens.len() {
            self.forget(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use worker_compute::KvType;

    fn spec(windows: Vec<Option<u32>>) -> KvSpec {
        KvSpec {
            n_seq: 1,
            n_ctx: 1000,
            layer_windows: windows,
            kv_dim: 8,
            max_batch: 16,
            ty: KvType::F16,
            layer_states: Vec::new(),
            layer_dims: Vec::new(),
            layer_sources: Vec::new(),
        }
    }

    /// The rings after writing `positions` in order.
    fn written(spec: &KvSpec, positions: impl IntoIterator<Item = usize>) -> Vec<Ring> {
        let mut rings = Ring::for_spec(spec);
        for p in positions {
            for r in &mut rings {
                r.write(p);
            }
        }
        rings
    }

    #[test]
    fn the_common_prefix_less_the_last_prompt_token() {
        let full = spec(vec![None, None]);
        assert!(Ring::for_spec(&full).is_empty());
        assert_eq!(reusable(&[1, 2, 3, 4], &[1, 2, 3, 9, 9], &[]), 3);
        // The whole prompt cached: its last token runs again.
        assert_eq!(reusable(&[1, 2, 3, 4], &[1, 2, 3], &[]), 2);
        assert_eq!(reusable(&[5, 2, 3], &[1, 2, 3], &[]), 0);
        assert_eq!(reusable(&[], &[1, 2], &[]), 0);
        assert_eq!(reusable(&[1], &[1], &[]), 0);
    }

    #[test]
    fn a_sliding_window_ring_must_still_hold_what_is_looked_back_at() {
        // Window 32 and max batch 16: a ring of 48 rows.
        let windowed = spec(vec![None, Some(32)]);
        let cached: Vec<u32> = (0..100).collect();
        let prompt = |n: u32| -> Vec<u32> { (0..n).chain([7777]).collect() };
        let rings = written(&windowed, 0..100);
        // The ring has positions 52..100. Reusing 99 means attending from
        // 68 on: held. 83 attends from 52: held.
        assert_eq!(reusable(&cached, &prompt(99), &rings), 99);
        assert_eq!(reusable(&cached, &prompt(83), &rings), 83);
        // Reusing 82 needs 51, overwritten by 99.
        assert_eq!(reusable(&cached, &prompt(82), &rings), 0);
        // Reusing 10 of a long sequence: its start is long gone.
        assert_eq!(reusable(&cached, &prompt(10), &rings), 0);
        // A short sequence never wrapped.
        let short = written(&windowed, 0..40);
        assert_eq!(reusable(&cached[..40], &prompt(10), &short), 10);
        // A window as long as the context never wraps either.
        let wide = KvSpec {
            n_ctx: 100,
            ..spec(vec![Some(90)])
        };
        assert!(Ring::for_spec(&wide).is_empty());
    }

    #[test]
    fn rows_a_shorter_later_job_left_alone_stay_overwritten() {
        // A wrote 0..100, B reused 84 and wrote one more row: the history
        // is 85 long, but row 39 holds A's position 87.
        let windowed = spec(vec![Some(32)]);
        let rings = written(&windowed, (0..100).chain([84]));
        let cached: Vec<u32> = (0..85).collect();
        let prompt: Vec<u32> = (0..70).chain([5555]).collect();
        assert_eq!(reusable(&cached, &prompt, &rings), 0);
        // After a failure nothing is reused.
        let mut rings = written(&windowed, 0..40);
        assert_eq!(reusable(&cached[..40], &prompt[..20], &rings), 19);
        for r in &mut rings {
            r.forget();
        }
        assert_eq!(reusable(&cached[..40], &prompt[..20], &rings), 0);
    }

    #[test]
    fn a_request_takes_the_free_slot_with_the_longest_prefix_else_the_least_recent() {
        let mut cache = PromptCache::new(&KvSpec {
            n_seq: 3,
            ..spec(vec![None])
        });
        let a: Vec<u32> = (0..40).collect();
        let b: Vec<u32> = (100..140).collect();
        for (i, &id) in a.iter().enumerate() {
            cache.feed(0, i, id);
        }
        cache.stepped((0..40).map(|p| (0, p)));
        for (i, &id) in b.iter().enumerate() {
            cache.feed(1, i, id);
        }
        cache.stepped((0..40).map(|p| (1, p)));
        let all_free = |_: usize| true;
        let follow_up: Vec<u32> = (0..50).collect();
        assert_eq!(
            cache.place(&follow_up, all_free),
            Some(Placement {
                seq: 0,
                own: 40,
                copy: None,
                restore: false,
            })
        );
        // Nothing shared: slot 2 (never used) before 0 (used before 1).
        assert_eq!(cache.place(&[7, 8, 9], all_free).map(|p| p.seq), Some(2));
        assert_eq!(cache.place(&[7, 8, 9], |s| s != 2).map(|p| p.seq), Some(0));
        // Slot 0 is busy: its prefix is copied to the least recent free
        // slot, not over slot 1's conversation.
        assert_eq!(
            cache.place(&follow_up, |s| s != 0),
            Some(Placement {
                seq: 2,
                own: 0,
                copy: Some((0, 40)),
                restore: false,
            })
        );
        assert_eq!(cache.place(&follow_up, |_| false), None);
        cache.copied(0, 2, 40);
        assert_eq!(cache.reusable(2, &follow_up), 40);
        assert_eq!(cache.best_reusable(&b), 39);
        cache.truncate(2, 10);
        assert_eq!(cache.reusable(2, &follow_up), 10);
        cache.forget_all();
        assert_eq!(cache.best_reusable(&follow_up), 0);
    }

    #[test]
    fn a_recurrent_slot_supplies_all_it_holds_or_its_kept_prompt() {
        let mut spec = spec(vec![None, None]);
        spec.layer_states = vec![
            Some(worker_compute::StateShape {
                conv_taps: 4,
                conv_channels: 8,
                n_heads: 2,
                head_dim: 4,
            }),
            None,
        ];
        let mut cache = PromptCache::new(&KvSpec { n_seq: 2, ..spec });
        let prompt: Vec<u32> = (0..30).collect();
        for (i, &id) in prompt.iter().enumerate() {
            cache.feed(0, i, id);
        }
        cache.kept(0, 30);
        // The reply: five tokens generated after the prompt.
        for (i, id) in (100..105).enumerate() {
            cache.feed(0, 30 + i, id);
        }
        let free = |s: usize| s == 0;
        // The conversation goes on with the reply as generated: all of it.
        let whole: Vec<u32> = (0..30).chain(100..105).chain([7, 8]).collect();
        let p = cache.place(&whole, free).expect("a slot");
        assert_eq!((p.own, p.restore), (35, false));
        // ... or with the reply rendered otherwise: the kept prompt.
        let edited: Vec<u32> = (0..30).chain([55, 56, 57]).collect();
        let p = cache.place(&edited, free).expect("a slot");
        assert_eq!((p.own, p.restore, p.copy), (30, true, None));
        // A prompt sharing less than the kept one gets nothing.
        let short: Vec<u32> = (0..20).chain([9]).collect();
        assert_eq!(cache.place(&short, free).expect("a slot").own, 0);
        // Restored, the slot holds the kept prompt live.
        cache.truncate(0, 30);
        let p = cache.place(&edited, free).expect("a slot");
        assert_eq!((p.own, p.restore), (30, false));
        // Once a token before the kept length changes, the kept state is
        // gone.
        cache.feed(0, 20, 99);
        assert_eq!(cache.place(&edited, free).expect("a slot").own, 0);
        // A busy slot's kept prompt is copied to a free one.
        for (i, &id) in prompt.iter().enumerate() {
            cache.feed(0, i, id);
        }
        cache.kept(0, 30);
        for (i, id) in (200..220).enumerate() {
            cache.feed(0, 30 + i, id);
        }
        let long_edit: Vec<u32> = (0..30).chain(300..320).collect();
        let p = cache.place(&long_edit, |s| s == 1).expect("a slot");
        assert_eq!((p.seq, p.copy, p.restore), (1, Some((0, 30)), false));
    }
}
