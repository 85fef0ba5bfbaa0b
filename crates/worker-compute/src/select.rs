//! Choosing the largest values of a row: the top-k that sampling starts
//! from, shared by the host sampler and the default
//! [`Backend::top_k_rows`](crate::Backend::top_k_rows), and the order a
//! device kernel must reproduce.
//!
//! The order is total: by value as [`f32::total_cmp`] orders it, largest
//! first, and the lowest index first among equal values. [`order_key`] maps
//! a value to an unsigned integer with that order, so a kernel can sort on
//! `(key << 32) | !index` and give the same candidates, in the same order,
//! as the host.

/// An unsigned key that orders `x` as [`f32::total_cmp`] does.
#[inline]
pub fn order_key(x: f32) -> u32 {
    let b = x.to_bits();
    // Negative values (sign set) flip every bit; others set the sign bit.
    b ^ ((((b as i32) >> 31) as u32) | 0x8000_0000)
}

/// The value whose [`order_key`] is `key`.
#[inline]
pub fn from_order_key(key: u32) -> f32 {
    let b = if key & 0x8000_0000 != 0 {
        key ^ 0x8000_0000
    } else {
        !key
    };
    f32::from_bits(b)
}

/// Whether entry `a` comes before entry `b`: the larger value, then the
/// lower index.
#[inline]
pub fn before(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    order_key(b.1).cmp(&order_key(a.1)).then(a.0.cmp(&b.0))
}

/// The `k` largest values of `row` (all of them when `k >= row.len()`) with
/// their indices, in the order of [`before`], into `out`.
///
/// One pass: once `k` candidates are known, a value must beat the worst of
/// them to be kept, which most values of a logit row fail at the cost of one
/// integer comparison; the kept ones are cut back to `k` whenever they
/// reach `2k`. A later value equal to the worst kept one has a higher
/// index, so it loses the tie and is skipped too.
pub fn top_k(row: &[f32], k: usize, out: &mut Vec<(u32, f32)>) {
    out.clear();
    let k = k.min(row.len());
    if k == 0 {
        return;
    }
    let cut = |out: &mut Vec<(u32, f32)>| {
        out.select_nth_unstable_by(k - 1, before);
        out.truncate(k);
        order_key(out[k - 1].1)
    };
    let head = (2 * k).min(row.len());
    out.extend(row[..head].iter().enumerate().map(|(i, &v)| (i as u32, v)));
    if head < row.len() {
        let mut worst = cut(out);
        const CHUNK: usize = 16;
        let mut start = head;
        while start < row.len() {
            let end = (start + CHUNK).min(row.len());
            let chunk = &row[start..end];
            // The common case, a chunk with nothing better than the worst
            // kept value, is one vectorizable maximum.
            let best = chunk.iter().map(|&v| order_key(v)).max().unwrap_or(0);
            if best > worst {
                for (j, &v) in chunk.iter().enumerate() {
                    if order_key(v) > worst {
                        out.push(((start + j) as u32, v));
                        if out.len() == 2 * k {
                            worst = cut(out);
                        }
                    }
                }
            }
            start = end;
        }
    }
    if out.len() > k {
        cut(out);
    }
    out.sort_unstable_by(before);
}

/// [`top_k`] of each row of `dim` values in `rows`, appended to `out`
/// (`min(k, dim)` entries per row).
pub fn top_k_rows(rows: &[f32], dim: usize, k: usize, out: &mut Vec<(u32, f32)>) {
    out.clear();
    let mut row_top = Vec::new();
    for row in rows.chunks_exact(dim.max(1)) {
        top_k(row, k, &mut row_top);
        out.extend_from_slice(&row_top);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(row: &[f32], k: usize) -> Vec<(u32, f32)> {
        let mut all: Vec<(u32, f32)> = row
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as u32, v))
            .collect();
        all.sort_by(before);
        all.truncate(k);
        all
    }

    #[test]
    fn order_key_is_total_cmp() {
        let vals = [
            f32::NEG_INFINITY,
            -3.5,
            -f32::MIN_POSITIVE,
            -0.0,
            0.0,
            1e-40,
            2.0,
            f32::INFINITY,
            f32::NAN,
            -f32::NAN,
        ];
        for &a in &vals {
            assert_eq!(from_order_key(order_key(a)).to_bits(), a.to_bits());
            for &b in &vals {
                assert_eq!(
                    order_key(a).cmp(&order_key(b)),
                    a.total_cmp(&b),
                    "{a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn matches_a_full_sort() {
        // A fixed pseudo-random row with many ties (values on a coarse grid).
        let mut state = 0x2545_f491_u32;
        let row: Vec<f32> = (0..5000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                ((state % 200) as f32 - 100.0) / 8.0
            })
            .collect();
        let mut out = Vec::new();
        for k in [1, 2, 7, 40, 64, 257, 4999, 5000, 6000] {
            top_k(&row, k, &mut out);
            assert_eq!(out, reference(&row, k), "k = {k}");
        }
        // Rising values make every element a new candidate.
        let rising: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        top_k(&rising, 10, &mut out);
        assert_eq!(out, reference(&rising, 10));
        top_k(&rising, 0, &mut out);
        assert!(out.is_empty());
        top_k(&[], 3, &mut out);
        assert!(out.is_empty());
    }
}
