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
}
