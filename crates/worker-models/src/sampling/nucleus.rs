//! Top-p: the smallest set of the most likely candidates whose weights
//! reach a mass.
//!
//! Nothing is sorted whole. One pass adds every weight into a bucket
//! chosen by the weight's leading bits (1/64 of an octave each, so a larger
//! weight never lands in a later bucket); the running sum over buckets,
//! largest weights first, finds the one bucket where the mass is crossed.
//! A second pass gathers that bucket's candidates, and a weighted
//! quickselect cuts them: partition around a pivot, sum the weights of the
//! side that comes first, and keep working only on the side where the
//! running sum crosses the mass. Peaked or flat, that is two linear passes
//! and a selection over a small part, instead of a sort of the vocabulary.

use worker_compute::select::order_key;

/// Ranges this short are sorted instead of partitioned.
const SMALL: usize = 32;
/// Mantissa bits of a weight that pick its bucket within its octave.
const SUB_BITS: u32 = 6;
/// The bits of 1.0, the largest weight.
const ONE: u32 = 127 << 23;
/// Buckets: every weight in `[0, 1]`.
const BUCKETS: usize = (ONE >> (23 - SUB_BITS)) as usize + 1;

/// A candidate as its [`key`] and its weight.
pub(super) type Weighted = (u64, f32);

/// A key whose ascending order is the order of
/// [`before`](worker_compute::select::before): the larger logit first, then
/// the lower id. Sorting and partitioning compare one integer.
#[inline]
pub(super) fn key(id: u32, logit: f32) -> u64 {
    (u64::from(!order_key(logit)) << 32) | u64::from(id)
}

/// Working memory, kept between tokens.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// Weight per bucket.
    sums: Vec<f64>,
    /// The crossing bucket's candidates.
    gathered: Vec<Weighted>,
}

/// The bucket of a weight in `[0, 1]`: 0 for 1.0, larger for smaller
/// weights, never smaller for a smaller weight.
#[inline]
fn bucket(weight: f32) -> usize {
    ((ONE.saturating_sub(weight.to_bits()) >> (23 - SUB_BITS)) as usize).min(BUCKETS - 1)
}

/// The [`key`] of the last candidate of the smallest set of the most
/// likely candidates of `c` (their weights, in `[0, 1]`, in `weights`)
/// whose weights reach `mass`, or of all when rounding leaves the mass out
/// of reach; `None` when there are none. The kept candidates are those
/// whose key is not larger.
pub(super) fn boundary(
    c: &[(u32, f32)],
    weights: &[f32],
    mass: f64,
    s: &mut Scratch,
) -> Option<u64> {
    let sums = &mut s.sums;
    sums.clear();
    sums.resize(BUCKETS, 0.0);
    for &x in weights {
        sums[bucket(x)] += f64::from(x);
    }
    let mut acc = 0.0f64;
    let mut crossing = None;
    for (b, &sum) in sums.iter().enumerate() {
        if sum > 0.0 && acc + sum >= mass {
            crossing = Some(b);
            break;
        }
        acc += sum;
    }
    let Some(b) = crossing else {
        // Rounding kept the mass out of reach: everything.
        return c.iter().map(|e| key(e.0, e.1)).max();
    };
    let g = &mut s.gathered;
    g.clear();
    g.extend(
        c.iter()
            .zip(weights)
            .filter(|(_, x)| bucket(**x) == b)
            .map(|(e, &x)| (key(e.0, e.1), x)),
    );
    let end = cut(g, acc, mass);
    Some(g[end - 1].0)
}

/// The length of the shortest run of `w`, in the order of [`before`],
/// whose weights added to `acc` reach `mass` (all of `w` if none does);
/// that run is left at the front of `w`, its last candidate at the end of
/// it. `acc < mass` on entry; `w` is not empty.
///
/// Invariant: everything in `[0, lo)` comes before everything in `[lo,
/// hi)`, which comes before everything in `[hi, len)`; `acc` includes the
/// weights of `[0, lo)` and stays below `mass`; the cut lies in `(lo, hi]`.
fn cut(w: &mut [Weighted], mut acc: f64, mass: f64) -> usize {
    let (mut lo, mut hi) = (0, w.len());
    // Median-of-three pivots make bad splits unlikely; after this many
    // levels the rest is sorted, so the worst case stays n log n.
    let mut levels = 2 * (usize::BITS - w.len().leading_zeros()) + 4;
    loop {
        if hi - lo <= SMALL || levels == 0 {
            w[lo..hi].sort_unstable_by_key(|e| e.0);
            for (i, e) in w.iter().enumerate().take(hi).skip(lo) {
                acc += f64::from(e.1);
                if acc >= mass {
                    return i + 1;
                }
            }
            return hi;
        }
        levels -= 1;
        let p = partition(&mut w[lo..hi]) + lo;
        let first: f64 = w[lo..p].iter().map(|e| f64::from(e.1)).sum();
        if acc + first >= mass {
            hi = p;
        } else {
            acc += first + f64::from(w[p].1);
            if acc >= mass {
                return p + 1;
            }
            lo = p + 1;
        }
    }
}

/// Partitions `w` (at least three long) around a median-of-three pivot:
/// what comes before it, then the pivot, then the rest. Returns the
/// pivot's index.
fn partition(w: &mut [Weighted]) -> usize {
    let last = w.len() - 1;
    let mid = w.len() / 2;
    // Order w[0], w[mid], w[last]; the median lands at mid.
    if w[mid].0 < w[0].0 {
        w.swap(mid, 0);
    }
    if w[last].0 < w[mid].0 {
        w.swap(last, mid);
        if w[mid].0 < w[0].0 {
            w.swap(mid, 0);
        }
    }
    w.swap(mid, last);
    let pivot = w[last].0;
    let mut store = 0;
    for i in 0..last {
        if w[i].0 < pivot {
            w.swap(i, store);
            store += 1;
        }
    }
    w.swap(store, last);
    store
}

#[cfg(test)]
mod tests {
    use super::*;
    use worker_compute::select::before;

    /// The definition: sort everything, keep the shortest prefix reaching
    /// the mass.
    fn by_sorting(c: &[(u32, f32)], mass: f64, weight: impl Fn(f32) -> f32) -> Vec<u32> {
        let mut s = c.to_vec();
        s.sort_unstable_by(before);
        let mut acc = 0.0;
        let mut keep = s.len();
        for (i, e) in s.iter().enumerate() {
            acc += f64::from(weight(e.1));
            if acc >= mass {
                keep = i + 1;
                break;
            }
        }
        let mut ids: Vec<u32> = s[..keep.max(1)].iter().map(|e| e.0).collect();
        ids.sort_unstable();
        ids
    }

    fn rows() -> Vec<Vec<(u32, f32)>> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut rows = Vec::new();
        for (n, spread) in [
            (10, 1.0),
            (200, 0.01),
            (5000, 0.5),
            (20_000, 4.0),
            (20_000, 0.0),
        ] {
            let row: Vec<(u32, f32)> = (0..n).map(|i| (i, next() * spread)).collect();
            rows.push(row);
        }
        // Many ties: logits from a handful of values.
        rows.push((0..3000).map(|i| (i, (i % 7) as f32 * 0.25)).collect());
        // Peaked: one logit far above a flat rest.
        rows.push(
            (0..3000)
                .map(|i| (i, if i == 1234 { 20.0 } else { 0.0 }))
                .collect(),
        );
        rows
    }

    fn kept(row: &[(u32, f32)], mass: f64, weight: impl Fn(f32) -> f32) -> Vec<u32> {
        let weights: Vec<f32> = row.iter().map(|e| weight(e.1)).collect();
        let Some(b) = boundary(row, &weights, mass, &mut Scratch::default()) else {
            return Vec::new();
        };
        row.iter()
            .filter(|e| key(e.0, e.1) <= b)
            .map(|e| e.0)
            .collect()
    }

    #[test]
    fn the_cut_is_the_sorted_definition() {
        for row in rows() {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, e| m.max(e.1));
            let weight = |l: f32| (l - max).exp();
            let total: f64 = row.iter().map(|e| f64::from(weight(e.1))).sum();
            for p in [0.05, 0.3, 0.5, 0.9, 0.95, 0.999, 1.0] {
                let mass = p * total;
                let got = kept(&row, mass, weight);
                let want = by_sorting(&row, mass, weight);
                // Sums in another order may round across the mass by one
                // candidate, never more.
                assert!(
                    got.len().abs_diff(want.len()) <= 1,
                    "n {} p {p}: {} vs {}",
                    row.len(),
                    got.len(),
                    want.len()
                );
                let (short, long) = if got.len() <= want.len() {
                    (&got, &want)
                } else {
                    (&want, &got)
                };
                assert!(short.iter().all(|id| long.binary_search(id).is_ok()));
            }
        }
    }

    #[test]
    fn keys_order_as_before() {
        let vals = [
            f32::NEG_INFINITY,
            -1.0,
            -0.0,
            0.0,
            1e-30,
            2.0,
            f32::INFINITY,
        ];
        for (ia, &a) in vals.iter().enumerate() {
            for (ib, &b) in vals.iter().enumerate() {
                for (ida, idb) in [(3u32, 7u32), (7, 3), (5, 5)] {
                    let _ = (ia, ib);
                    assert_eq!(
                        key(ida, a).cmp(&key(idb, b)),
                        before(&(ida, a), &(idb, b)),
                        "{a}@{ida} vs {b}@{idb}"
                    );
                }
            }
        }
    }

    #[test]
    fn at_least_one_survives() {
        let row = [(3, 1.0), (1, 1.0), (2, 0.5)];
        assert_eq!(kept(&row, 0.0, |l| l), vec![1]);
        assert_eq!(kept(&row, 1.5, |l| l), vec![3, 1]);
        assert_eq!(kept(&[], 1.0, |l| l), Vec::<u32>::new());
        // Out of reach: everything.
        assert_eq!(kept(&row, 10.0, |l| l), vec![3, 1, 2]);
    }

    #[test]
    fn larger_weights_never_land_in_later_buckets() {
        let mut prev = 0;
        let mut w = 1.0f32;
        while w > 0.0 {
            let b = bucket(w);
            assert!(b >= prev && b < BUCKETS, "{w}: {b}");
            prev = b;
            w = f32::from_bits(w.to_bits().saturating_sub(997));
        }
        assert_eq!(bucket(0.0), BUCKETS - 1);
        assert_eq!(bucket(1.0), 0);
    }
}
