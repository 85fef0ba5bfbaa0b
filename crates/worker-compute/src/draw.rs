//! The draw of a token from a whole row of logits at a temperature, with a
//! uniform number the caller supplies: `p(i) ∝ exp((l_i - max) / T)`,
//! walked in order of id. Shared by the host sampler and the default
//! [`Backend::draw_rows`](crate::Backend::draw_rows), so a backend that
//! draws on the host picks exactly what the sampler would, and a device
//! kernel follows the same definition (`exp_neg` included).
//!
//! Cost: the maximum, the weights (a polynomial `exp` that vectorizes) and
//! sums per chunk of 64 are passes over the row; the draw walks the chunk
//! sums, then one chunk.

/// Reusable buffers of [`draw`].
#[derive(Debug, Default)]
pub struct Scratch {
    weights: Vec<f32>,
    sums: Vec<f32>,
}

/// A temperature and a uniform number for each of `rows` rows, or a clear
/// error.
pub fn check_params(rows: usize, temps: &[f32], us: &[f32]) -> crate::Result<()> {
    if temps.len() < rows || us.len() < rows {
        return Err(crate::ComputeError::Shape(format!(
            "{rows} rows to draw from, {} temperatures and {} numbers",
            temps.len(),
            us.len()
        )));
    }
    Ok(())
}

/// [`draw`] on each row of `dim` values in `rows`, into `out` (buffers
/// reused per thread, so a step allocates nothing).
pub fn draw_rows(
    rows: &[f32],
    dim: usize,
    temps: &[f32],
    us: &[f32],
    out: &mut Vec<u32>,
) -> crate::Result<()> {
    let n = rows.len() / dim.max(1);
    check_params(n, temps, us)?;
    thread_local! {
        static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
    }
    SCRATCH.with(|s| {
        let mut scratch = s.borrow_mut();
        out.clear();
        for (i, row) in rows.chunks_exact(dim.max(1)).enumerate() {
            out.push(draw(row, temps[i], us[i], &mut scratch));
        }
    });
    Ok(())
}

/// Ids per chunk sum.
pub const CHUNK: usize = 64;

/// The token drawn from `row` at `temperature` (`<= 0`: the argmax, the
/// lowest id among equal values) with `u` uniform in `[0, 1)`.
pub fn draw(row: &[f32], temperature: f32, u: f32, scratch: &mut Scratch) -> u32 {
    if greedy(temperature) {
        return argmax(row);
    }
    let max = lanes_max(row);
    let inv_t = 1.0 / temperature;
    let w = &mut scratch.weights;
    w.clear();
    w.extend(row.iter().map(|&l| exp_neg((l - max) * inv_t)));
    let sums = &mut scratch.sums;
    sums.clear();
    sums.extend(w.chunks(CHUNK).map(lanes_sum));
    let total: f64 = sums.iter().map(|&x| f64::from(x)).sum();
    if !total.is_finite() || total <= 0.0 {
        return argmax(row);
    }
    let r = f64::from(u) * total;
    let mut cum = 0.0;
    for (ci, &cs) in sums.iter().enumerate() {
        let next = cum + f64::from(cs);
        if r < next {
            let chunk = &w[ci * CHUNK..(ci * CHUNK + CHUNK).min(w.len())];
            for (j, &x) in chunk.iter().enumerate() {
                cum += f64::from(x);
                if r < cum {
                    return (ci * CHUNK + j) as u32;
                }
            }
            // The chunk's own sum rounded above its walk: its last id with
            // any weight.
            let j = chunk.iter().rposition(|&x| x > 0.0).unwrap_or(0);
            return (ci * CHUNK + j) as u32;
        }
        cum = next;
    }
    // Rounding left r at the very end: the last id with any weight.
    w.iter().rposition(|&x| x > 0.0).unwrap_or(0) as u32
}

/// Whether `temperature` means the argmax: 0 or less, or NaN (as the
/// device kernel reads it).
pub fn greedy(temperature: f32) -> bool {
    temperature.is_nan() || temperature <= 0.0
}

/// The index of the largest value (the lowest among equal ones).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in row.iter().enumerate() {
        if l > row[best] {
            best = i;
        }
    }
    best as u32
}

/// The sum of `v` in `f64`, from sums of [`CHUNK`] values each taken over
/// eight lanes, so the work vectorizes.
pub fn sum(v: &[f32]) -> f64 {
    v.chunks(CHUNK).map(|c| f64::from(lanes_sum(c))).sum()
}

/// [`sum`] of `exp_neg(x - max)` over `row`, bit for bit, without
/// storing the weights.
pub fn exp_sum(row: &[f32], max: f32) -> f64 {
    let mut buf = [0f32; CHUNK];
    row.chunks(CHUNK)
        .map(|c| {
            let b = &mut buf[..c.len()];
            for (w, &x) in b.iter_mut().zip(c) {
                *w = exp_neg(x - max);
            }
            f64::from(lanes_sum(b))
        })
        .sum()
}

/// The largest value of `row` (NaN ignored; `-inf` when empty).
pub fn max(row: &[f32]) -> f32 {
    lanes_max(row)
}

/// The largest value (NaN ignored), over eight independent lanes so the
/// loop vectorizes.
fn lanes_max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut it = v.chunks_exact(8);
    for c in &mut it {
        for j in 0..8 {
            acc[j] = if c[j] > acc[j] { c[j] } else { acc[j] };
        }
    }
    it.remainder()
        .iter()
        .chain(acc.iter())
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// The sum, over eight independent lanes so the loop vectorizes.
fn lanes_sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut it = v.chunks_exact(8);
    for c in &mut it {
        for j in 0..8 {
            acc[j] += c[j];
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

/// `e^x` for `x <= 0` (NaN counts as very negative), to about 3e-7
/// relative error: `x = i ln 2 + r` with `|r| <= ln 2 / 2` (ln 2 in two
/// parts, so `r` is exact), `2^i` set in the exponent bits and `e^r` a
/// polynomial. Pure arithmetic, so a loop over a vocabulary vectorizes, and
/// the same on every machine.
#[inline]
pub fn exp_neg(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Below -87, e^x leaves the normal range; such weights are zero for
    // any purpose here.
    let x = if x > -87.0 { x } else { -87.0 };
    let x = if x < 0.0 { x } else { 0.0 };
    // The nearest integer to x log2 e, without round() (a libm call).
    let t = x * std::f32::consts::LOG2_E + 0.5;
    // SAFETY: t is in [-125, 0.5], well inside i32 (the saturating `as`
    // would add compares that keep the loop scalar).
    let ti: i32 = unsafe { t.to_int_unchecked() };
    let i = ti.wrapping_sub(i32::from((ti as f32) > t));
    let fi = i as f32;
    let r = (x - fi * LN2_HI) - fi * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    f32::from_bits((i.wrapping_add(127) as u32) << 23) * p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_neg_tracks_exp() {
        let mut worst = 0f32;
        for i in 0..=100_000 {
            let x = -87.0 * i as f32 / 100_000.0;
            let (got, want) = (exp_neg(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp_neg(0.0), 1.0);
        assert!(exp_neg(f32::NEG_INFINITY) < 1e-37);
        assert!(exp_neg(f32::NAN) < 1e-37);
    }
}
