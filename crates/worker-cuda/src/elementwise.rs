//! Element-wise ops: bias add, scale, add, activations (plain and gated)
//! and the logit soft cap, one thread per element.

use crate::backend::{CudaBackend, CudaBuf, i32_of, need};
use crate::kernels::per_element;
use crate::weight::CudaWeight;
use cudarc::driver::{CudaFunction, LaunchArgs, LaunchConfig, PushKernelArg};
use worker_compute::{Activation, Result};

/// The activation's code in the kernels (`act_f32`, `glu_f32`).
pub fn act_code(act: Activation) -> i32 {
    match act {
        Activation::Silu => 0,
        Activation::Gelu => 1,
        Activation::SwigluOai => 2,
        Activation::Sigmoid => 3,
    }
}

impl CudaBackend {
    /// A launch of `f` with one thread per element of `n`.
    pub(crate) fn elementwise<'a>(
        &'a self,
        f: &'a CudaFunction,
        n: usize,
    ) -> (LaunchArgs<'a>, LaunchConfig) {
        (self.stream.launch_builder(f), per_element(n))
    }

    pub(crate) fn add_bias_impl(
        &self,
        x: &mut CudaBuf,
        n: usize,
        dim: usize,
        bias: &CudaWeight,
    ) -> Result<()> {
        let b = bias.vector(dim, "a bias")?;
        need(x, n * dim, "add_bias")?;
        let (nn, d) = (n as i64, i32_of(dim, "dim")?);
        let (mut a, cfg) = self.elementwise(&self.k.add_bias, n * dim);
        a.arg(&mut x.0.data).arg(&b.data).arg(&nn).arg(&d);
        self.launch(a, cfg, "a bias add")
    }

    pub(crate) fn scale_impl(&self, x: &mut CudaBuf, len: usize, s: f32) -> Result<()> {
        need(x, len, "scale")?;
        let n = len as i64;
        let (mut a, cfg) = self.elementwise(&self.k.scale_f32, len);
        a.arg(&mut x.0.data).arg(&n).arg(&s);
        self.launch(a, cfg, "a scale")
    }

    pub(crate) fn add_impl(&self, a_buf: &mut CudaBuf, b: &CudaBuf, len: usize) -> Result<()> {
        need(a_buf, len, "add")?;
        need(b, len, "add")?;
        let n = len as i64;
        let (mut a, cfg) = self.elementwise(&self.k.add_f32, len);
        a.arg(&mut a_buf.0.data).arg(&b.0.data).arg(&n);
        self.launch(a, cfg, "an add")
    }

    pub(crate) fn glu_impl(
        &self,
        gate: &mut CudaBuf,
        up: &CudaBuf,
        len: usize,
        act: Activation,
    ) -> Result<()> {
        need(gate, len, "glu")?;
        need(up, len, "glu")?;
        let (n, code) = (len as i64, act_code(act));
        let (mut a, cfg) = self.elementwise(&self.k.glu_f32, len);
        a.arg(&mut gate.0.data).arg(&up.0.data).arg(&n).arg(&code);
        self.launch(a, cfg, "a gated activation")
    }

    pub(crate) fn act_impl(&self, x: &mut CudaBuf, len: usize, act: Activation) -> Result<()> {
        need(x, len, "act")?;
        let (n, code) = (len as i64, act_code(act));
        let (mut a, cfg) = self.elementwise(&self.k.act_f32, len);
        a.arg(&mut x.0.data).arg(&n).arg(&code);
        self.launch(a, cfg, "an activation")
    }

    pub(crate) fn softcap_impl(&self, x: &mut CudaBuf, len: usize, cap: f32) -> Result<()> {
        need(x, len, "softcap")?;
        let n = len as i64;
        let (mut a, cfg) = self.elementwise(&self.k.softcap_f32, len);
        a.arg(&mut x.0.data).arg(&n).arg(&cap);
        self.launch(a, cfg, "a soft cap")
    }
}
