//! Which matrix-product kernels run: the SIMD level, detected once from
//! what the CPU reports (or forced by `LLORCH_CPU_SIMD`), and which weight
//! types have kernels with eight tokens in SIMD lanes.

use worker_gguf::GgmlType;

/// Which kernels a product runs: chosen once, from what the CPU reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The scalar reference loops, compiled for baseline x86-64.
    Baseline,
    /// AVX2, FMA and F16C.
    Avx2,
    /// AVX2 plus AVX-512 VNNI, VL and BW (`vpdpbusd` on 256-bit vectors,
    /// masked byte moves) in the prefill and one-token kernels.
    Vnni,
}

impl Kernels {
    /// The best this CPU runs. `LLORCH_CPU_SIMD=off` forces the baseline,
    /// `LLORCH_CPU_SIMD=avx2` AVX2 without VNNI (for comparisons).
    pub fn detect() -> Self {
        let simd = std::env::var("LLORCH_CPU_SIMD").unwrap_or_default();
        if !matches!(simd.as_str(), "" | "off" | "avx2" | "auto") {
            tracing::warn!(value = %simd, "LLORCH_CPU_SIMD is not off, avx2 or auto; using the baseline kernels");
            return Kernels::Baseline;
        }
        if simd == "off" || !super::cpu_has_avx2() {
            return Kernels::Baseline;
        }
        #[cfg(target_arch = "x86_64")]
        if simd != "avx2" && super::tile_avx2::has_vnni() {
            return Kernels::Vnni;
        }
        Kernels::Avx2
    }

    /// Whether this CPU runs the level. The public products take a level
    /// as an argument, so they check it: a level this CPU lacks must not
    /// reach an instruction it cannot execute.
    pub(super) fn supported(self) -> bool {
        match self {
            Kernels::Baseline => true,
            Kernels::Avx2 => super::cpu_has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Kernels::Vnni => super::cpu_has_avx2() && super::tile_avx2::has_vnni(),
            #[cfg(not(target_arch = "x86_64"))]
            Kernels::Vnni => false,
        }
    }

    /// The level itself when this CPU runs it, else the baseline.
    pub(super) fn or_baseline(self) -> Self {
        if self.supported() {
            self
        } else {
            Kernels::Baseline
        }
    }

    /// Every level this CPU runs, for tests.
    pub fn available() -> Vec<Self> {
        let mut levels = vec![Kernels::Baseline];
        if super::cpu_has_avx2() {
            levels.push(Kernels::Avx2);
            #[cfg(target_arch = "x86_64")]
            if super::tile_avx2::has_vnni() {
                levels.push(Kernels::Vnni);
            }
        }
        levels
    }
}

/// Whether `ty` has a kernel with eight tokens in lanes (`tile_avx2`,
/// `tile_k4`, `tile_lut`).
pub(super) fn has_tile_kernel(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q8_0
            | GgmlType::Q4_0
            | GgmlType::Q5_0
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::IQ4_NL
            | GgmlType::IQ4_XS
            | GgmlType::MXFP4
    )
}

#[cfg(test)]
mod tests {
    use super::Kernels;

    #[test]
    fn a_level_the_cpu_lacks_falls_back_to_the_baseline() {
        let available = Kernels::available();
        for level in [Kernels::Baseline, Kernels::Avx2, Kernels::Vnni] {
            assert_eq!(level.supported(), available.contains(&level), "{level:?}");
            let used = level.or_baseline();
            assert!(used == level || used == Kernels::Baseline, "{level:?}");
            assert!(available.contains(&used));
        }
    }
}
