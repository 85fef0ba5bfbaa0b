//! Rotary position embedding: the batch's positions (and the model's
//! frequency factors, if any) are staged on the device, and one block per
//! (token, head) rotates the first `n_rot` dimensions, one thread per pair.

use crate::backend::{CudaBackend, CudaBuf, i32_of, need, shape};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use worker_compute::{ComputeError, Result, RopeParams, RopeStyle, TokenPos};

impl CudaBackend {
    pub(crate) fn rope_impl(
        &self,
        x: &mut CudaBuf,
        tokens: &[TokenPos],
        n_head: usize,
        head_dim: usize,
        p: &RopeParams,
    ) -> Result<()> {
        need(x, tokens.len() * n_head * head_dim, "rope")?;
        let n_rot = p.n_rot.min(head_dim);
        if n_rot < 2 || tokens.is_empty() {
            return Ok(());
        }
        // The same f32 factor the CPU backend iterates.
        let theta_scale = p.freq_base.powf(-2.0 / n_rot as f32);
        let mut st = self.staging();
        self.stage_tokens(&mut st, tokens)?;
        if let Some(ff) = &p.freq_factors {
            if ff.len() < n_rot / 2 {
                return Err(shape(format!(
                    "{} RoPE factors, {} needed",
                    ff.len(),
                    n_rot / 2
                )));
            }
            self.stage_rope_factors(&mut st, ff)?;
        }
        let (Some(pos), floats) = (st.pos.as_ref(), st.floats.as_ref()) else {
            return Err(ComputeError::Device("staging".into()));
        };
        let (nh, hd, nr) = (
            i32_of(n_head, "heads")?,
            i32_of(head_dim, "head_dim")?,
            n_rot as i32,
        );
        let neox = i32::from(p.style == RopeStyle::Neox);
        let null = 0u64;
        let mut a = self.stream.launch_builder(&self.k.rope);
        a.arg(&mut x.0.data)
            .arg(&pos.data)
            .arg(&nh)
            .arg(&hd)
            .arg(&nr)
            .arg(&neox)
            .arg(&theta_scale)
            .arg(&p.freq_scale);
        match (&p.freq_factors, floats) {
            (Some(_), Some(f)) => a.arg(&f.data),
            _ => a.arg(&null),
        };
        let [corr_low, corr_high] = p.corr_dims;
        a.arg(&p.ext_factor)
            .arg(&corr_low)
            .arg(&corr_high)
            .arg(&p.attn_factor);
        let cfg = LaunchConfig {
            grid_dim: (tokens.len() as u32, n_head as u32, 1),
            block_dim: ((n_rot / 2) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch(a, cfg, "RoPE")
    }
}
