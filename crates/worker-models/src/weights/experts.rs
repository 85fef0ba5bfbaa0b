//! The routed experts of a block and its shared expert: views of each
//! expert's slices of the stacked tensors.

use super::{Expert, Ffn, Linear, Loader, SharedExpert};
use crate::config::{Arch, MoeConfig};
use crate::error::{ModelError, Result};
use worker_compute::Backend;

impl<B: Backend> Loader<'_, B> {
    /// The router and the experts of block `il`, each expert a view of its
    /// slice of the stacked `ffn_{gate,up,down}_exps` tensors and, where
    /// the model has them, of the stacked biases beside them (one row per
    /// expert). gpt-oss must have every bias.
    pub(super) fn experts(
        &self,
        il: usize,
        n_embd: usize,
        moe: MoeConfig,
    ) -> Result<Ffn<B::Weight>> {
        let p = |s: &str| format!("blk.{il}.{s}");
        let (ff, n) = (moe.n_ff_exp as u64, moe.n_expert as u64);
        let e = n_embd as u64;
        let biased = self.arch == Arch::GptOss;
        for (name, cols, rows) in [
            ("ffn_gate_exps", e, ff),
            ("ffn_up_exps", e, ff),
            ("ffn_down_exps", ff, e),
        ] {
            self.shape(&p(&format!("{name}.weight")), &[cols, rows, n])?;
            self.shape(&p(&format!("{name}.bias")), &[rows, n])?;
        }
        self.shape(&p("ffn_gate_inp.bias"), &[n])?;
        let router = self.linear(&p("ffn_gate_inp"), n_embd, moe.n_expert)?;
        if biased && router.b.is_none() {
            return Err(ModelError::MissingTensor {
                name: p("ffn_gate_inp.bias"),
                arch: self.arch.name().to_string(),
            });
        }
        let expert = |name: &str, x: usize| -> Result<Linear<B::Weight>> {
            let bias = p(&format!("{name}.bias"));
            Ok(Linear {
                w: self.req_expert(&p(&format!("{name}.weight")), x)?,
                b: match (self.file.header().tensor(&bias), biased) {
                    (None, false) => None,
                    _ => Some(self.req_expert(&bias, x)?),
                },
            })
        };
        let experts = (0..moe.n_expert)
            .map(|x| {
                Ok(Expert {
                    gate: Some(expert("ffn_gate_exps", x)?),
                    up: expert("ffn_up_exps", x)?,
                    down: expert("ffn_down_exps", x)?,
                })
            })
            .collect::<Result<_>>()?;
        let shared = self.shared_expert(il, n_embd, moe.n_ff_shared)?;
        Ok(Ffn::Experts {
            router,
            experts,
            shared,
        })
    }

    /// Block `il`'s shared expert and its gate, where the file has them.
    fn shared_expert(
        &self,
        il: usize,
        n_embd: usize,
        n_ff: usize,
    ) -> Result<Option<SharedExpert<B::Weight>>> {
        let p = |s: &str| format!("blk.{il}.{s}");
        let Some(up) = self.linear_opt(&p("ffn_up_shexp"), n_embd, n_ff)? else {
            return Ok(None);
        };
        Ok(Some(SharedExpert {
            weight_gate: self.row(&p("ffn_gate_inp_shexp.weight"), n_embd)?,
            ffn: Expert {
                gate: Some(self.linear(&p("ffn_gate_shexp"), n_embd, n_ff)?),
                up,
                down: self.linear(&p("ffn_down_shexp"), n_ff, n_embd)?,
            },
        }))
    }

    /// Expert `expert` of the stacked tensor `name`: a matrix of a 3-D
    /// tensor, a vector of a 2-D one.
    pub(super) fn req_expert(&self, name: &str, expert: usize) -> Result<B::Weight> {
        let info = self
            .file
            .header()
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                arch: self.arch.name().to_string(),
            })?;
        Ok(self
            .backend
            .weight(self.source(name, info).expert_of(expert))?)
    }
}
