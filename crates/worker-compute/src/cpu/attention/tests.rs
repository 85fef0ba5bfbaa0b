//! Attention kernels against their plain forms, bit for bit.

use super::*;

#[test]
fn row_reduction_equals_reduce16_bit_for_bit() {
    for hd in [8, 20, 64] {
        let lanes: Vec<f32> = (0..16 * hd)
            .map(|i| ((i as u32).wrapping_mul(2654435761) % 2001) as f32 / 997.0 - 1.0)
            .collect();
        let mut o = vec![0f32; hd];
        reduce16_rows(&lanes, &mut o);
        for d in 0..hd {
            let want = reduce16(std::array::from_fn(|l| lanes[l * hd + d]));
            assert_eq!(o[d].to_bits(), want.to_bits(), "hd {hd}, d {d}");
        }
    }
}

#[test]
fn value_sums_by_lane_equal_sums_by_key_bit_for_bit() {
    let hd = 64;
    let val = |i: usize| ((i as u32).wrapping_mul(2654435761) % 2001) as f32 / 1000.0 - 1.0;
    // Windows that start and end inside a 16-position round, or span
    // one round only.
    for (first, n) in [(0, 1), (3, 40), (16, 16), (21, 7), (5, 100)] {
        let vals: Vec<f32> = (0..n * hd).map(|i| val(i + 7)).collect();
        let weights: Vec<f32> = (0..n).map(|j| val(j) * 0.5 + 0.5).collect();
        let vrow = |j: usize| &vals[j * hd..(j + 1) * hd];
        let mut by_lane = vec![0f32; hd];
        weighted_values_by_lane(first, &weights, &vals, hd, &mut by_lane);
        let mut by_key = vec![0f32; hd];
        weighted_values_by_key(first, &weights, vrow, &mut by_key);
        // Four heads at once, each with its own weights: the same bits
        // as one head at a time.
        let w4: Vec<Vec<f32>> = (0..4)
            .map(|h| {
                weights
                    .iter()
                    .map(|w| w * (1.0 + h as f32 * 0.25))
                    .collect()
            })
            .collect();
        let mut four = vec![0f32; 4 * hd];
        let w = [&w4[0][..], &w4[1][..], &w4[2][..], &w4[3][..]];
        weighted_values_by_lane4(first, w, &vals, hd, &mut four);
        for h in 0..4 {
            let mut one = vec![0f32; hd];
            weighted_values_by_lane(first, &w4[h], &vals, hd, &mut one);
            assert_eq!(
                four[h * hd..(h + 1) * hd]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>(),
                one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "head {h}, first {first}, {n} keys"
            );
        }
        assert_eq!(
            by_lane.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            by_key.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "first {first}, {n} keys"
        );
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn four_key_dots_equal_single_dots_bit_for_bit() {
    if !super::super::cpu_has_avx2() {
        return;
    }
    let v = |seed: u32, n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0
                    - 1.0
            })
            .collect()
    };
    for n in [16, 64, 256] {
        let a = v(1, n);
        let keys: Vec<Vec<f32>> = (2..6).map(|s| v(s, n)).collect();
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        let four = unsafe { dot_lanes4_avx2(&a, [&keys[0], &keys[1], &keys[2], &keys[3]]) };
        for k in 0..4 {
            assert_eq!(
                four[k].to_bits(),
                dot_lanes(&a, &keys[k]).to_bits(),
                "n {n} key {k}"
            );
        }
    }
}
