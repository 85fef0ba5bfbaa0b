//! Prompt caching: a new request that starts with the tokens a sequence's
//! KV cache already holds skips computing them again.
//!
//! Multi-turn chats send the whole conversation every turn, and requests
//! often share a system prompt; both then compute only what is new. The
//! scheduler keeps, per sequence slot, the tokens whose K and V rows are
//! stored (positions `0..n`), gives a new request the free slot whose
//! tokens share the longest prefix with its prompt, and starts its prefill
//! after that prefix. Nothing is copied: the backends' caches are indexed
//! by position and a request writes every later position before reading
//! it.
//!
//! A layer with a sliding window keeps its positions in a ring of
//! `window + max_batch` rows, so a long earlier sequence may have
//! overwritten the rows the new request's first tokens look back at;
//! [`reusable`] allows reuse only when those rows are still in the ring.

use worker_compute::KvSpec;

/// How many leading tokens of `prompt` a sequence whose cache holds the
/// rows of `cached` (positions `0..cached.len()`) can supply: the common
/// prefix, less one (the last prompt token must run to give the logits of
/// the first choice), and 0 when a windowed layer's ring no longer holds
/// the rows the first new token attends to.
pub fn reusable(cached: &[u32], prompt: &[u32], spec: &KvSpec) -> usize {
    let common = cached
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count();
    let reuse = common.min(prompt.len().saturating_sub(1));
    if reuse == 0 {
        return 0;
    }
    let held = cached.len();
    for &w in spec.layer_windows.iter().flatten() {
        let capacity = spec.layer_capacity(Some(w));
        if held <= capacity {
            continue;
        }
        // The first new token (position `reuse`) attends to the `w - 1`
        // positions before it; position `q` is still in the ring while no
        // later position `q + capacity` was written, i.e. `q + capacity >=
        // held`. Later tokens look back less far, and a batch writes at
        // most `max_batch` rows ahead, which the ring leaves room for.
        let first = (reuse + 1).saturating_sub(w as usize);
        if first + capacity < held {
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

    #[test]
    fn the_common_prefix_less_the_last_prompt_token() {
        let full = spec(vec![None, None]);
        assert_eq!(reusable(&[1, 2, 3, 4], &[1, 2, 3, 9, 9], &full), 3);
        // The whole prompt cached: its last token runs again.
        assert_eq!(reusable(&[1, 2, 3, 4], &[1, 2, 3], &full), 2);
        assert_eq!(reusable(&[5, 2, 3], &[1, 2, 3], &full), 0);
        assert_eq!(reusable(&[], &[1, 2], &full), 0);
        assert_eq!(reusable(&[1], &[1], &full), 0);
    }

    #[test]
    fn a_sliding_window_ring_must_still_hold_what_is_looked_back_at() {
        // Window 32 and max batch 16: a ring of 48 rows.
        let windowed = spec(vec![None, Some(32)]);
        let cached: Vec<u32> = (0..100).collect();
        let prompt = |n: u32| -> Vec<u32> { (0..n).chain([7777]).collect() };
        // Held 100 rows; the ring has positions 52..100. Reusing 99 means
        // attending from 68 on: held.
        assert_eq!(reusable(&cached, &prompt(99), &windowed), 99);
        // Reusing 84 attends from 53 on: held. 83 attends from 52: held.
        assert_eq!(reusable(&cached, &prompt(83), &windowed), 83);
        // Reusing 82 needs 51, overwritten by 99.
        assert_eq!(reusable(&cached, &prompt(82), &windowed), 0);
        // Reusing 10 of a long sequence: its start is long gone.
        assert_eq!(reusable(&cached, &prompt(10), &windowed), 0);
        // A short sequence never wrapped.
        assert_eq!(reusable(&cached[..40], &prompt(10), &windowed), 10);
        // A window as long as the context never wraps either.
        let wide = KvSpec {
            n_ctx: 100,
            ..spec(vec![Some(90)])
        };
        assert_eq!(reusable(&cached, &prompt(10), &wide), 10);
    }
}
