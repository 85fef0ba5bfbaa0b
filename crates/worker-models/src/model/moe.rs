//! The routed-experts feed-forward.
//!
//! Each token's router logits come back to the host (a few floats per
//! token), which picks its experts and their weights ([`route`]); then the
//! batch is processed expert by expert: the rows of the tokens an expert
//! serves are gathered, go through its gated feed-forward in one product
//! per matrix (plus its biases, where it has them), are scaled by their
//! weights and added into those tokens' output rows. So an expert's weights are read once per batch, however
//! many of the batch's tokens (prefill) or sequences (continuous batching)
//! it serves, and experts no token chose are not read at all.

use super::{Model, Workspace};
use crate::config::{MoeConfig, MoeGating};
use crate::error::Result;
use crate::weights::{Expert, Linear, SharedExpert};
use worker_compute::Backend;

/// Buffers of the expert feed-forward for batches of up to `n` tokens.
pub(crate) struct MoeBufs<B: Backend> {
    /// Router logits, `n * n_expert`.
    pub(super) router: B::Buf,
    /// The gathered inputs of one expert's tokens, `n * n_embd`.
    xe: B::Buf,
    /// One expert's outputs, `n * n_embd`.
    ye: B::Buf,
    /// A lone token's gate and up rows, one pair per expert it uses
    /// (`n_ff_exp` each).
    one: Vec<(B::Buf, B::Buf)>,
    /// The shared expert's gate logit per token.
    shared_gate: B::Buf,
    /// The fused gate and up products of one expert's tokens
    /// (`2 * n_ff_exp` each), where the experts fuse them.
    gate_up: B::Buf,
}

impl<B: Backend> MoeBufs<B> {
    /// Buffers for `n` tokens; `fused`: the experts' gate and up products
    /// are one matrix.
    pub(crate) fn new(
        b: &B,
        moe: &MoeConfig,
        n: usize,
        n_embd: usize,
        fused: bool,
    ) -> Result<Self> {
        Ok(MoeBufs {
            router: b.buf(n * moe.n_expert)?,
            xe: b.buf(n * n_embd)?,
            ye: b.buf(n * n_embd)?,
            one: (0..moe.n_expert_used)
                .map(|_| Ok((b.buf(moe.n_ff_exp)?, b.buf(moe.n_ff_exp)?)))
                .collect::<Result<_>>()?,
            shared_gate: b.buf(n)?,
            gate_up: b.buf(if fused { n * 2 * moe.n_ff_exp } else { 1 })?,
        })
    }
}

/// The tokens each expert serves: `rows[e]` and `weights[e]` list the batch
/// rows routed to expert `e` and the weight of its output in each.
#[derive(Debug, Clone, PartialEq)]
pub struct Routes {
    /// Per expert, the batch rows it serves, in order.
    pub rows: Vec<Vec<usize>>,
    /// Per expert, the weight of its output in each of those rows.
    pub weights: Vec<Vec<f32>>,
    /// Per token, the probability of the last expert it chose minus the
    /// next one's (infinite when it uses every expert).
    pub margins: Vec<f32>,
}

/// Routes `n` tokens given their router logits (`n * n_expert`, row-major).
/// [`MoeGating::Softmax`]: a softmax over all experts, the `n_used` most
/// probable kept (the lower index first among equal probabilities), their
/// probabilities divided by their sum (at least 2^-14, so a row of
/// underflowed probabilities cannot divide by zero).
/// [`MoeGating::SoftmaxChosen`]: the `n_used` largest logits kept (the
/// lower index first among equal ones), weighted by a softmax over those
/// logits alone. A row with a NaN logit routes to the first experts, with
/// NaN weights, as the arithmetic gives them. Margins are measured in the
/// softmax over all experts either way.
pub fn route(logits: &[f32], n_expert: usize, n_used: usize, gating: MoeGating) -> Routes {
    let mut routes = Routes {
        rows: vec![Vec::new(); n_expert],
        weights: vec![Vec::new(); n_expert],
        margins: Vec::with_capacity(logits.len() / n_expert.max(1)),
    };
    let n_used = n_used.min(n_expert);
    let mut probs = vec![0f32; n_expert];
    let mut order: Vec<usize> = Vec::with_capacity(n_expert);
    for (row, l) in logits.chunks_exact(n_expert.max(1)).enumerate() {
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f64;
        for (p, &x) in probs.iter_mut().zip(l) {
            *p = (x - max).exp();
            sum += f64::from(*p);
        }
        let inv = (1.0 / sum) as f32;
        probs.iter_mut().for_each(|p| *p *= inv);
        let keys = match gating {
            MoeGating::Softmax => &probs[..],
            MoeGating::SoftmaxChosen => l,
        };
        order.clear();
        order.extend(0..n_expert);
        // Larger first, then the lower index; NaN sorts as the smallest.
        order.sort_by(|&a, &b| {
            keys[b]
                .partial_cmp(&keys[a])
                .unwrap_or_else(|| keys[a].is_nan().cmp(&keys[b].is_nan()))
                .then(a.cmp(&b))
        });
        let chosen = &order[..n_used];
        routes
            .margins
            .push(match (n_used.checked_sub(1), order.get(n_used)) {
                (Some(last), Some(&next)) => probs[order[last]] - probs[next],
                _ => f32::INFINITY,
            });
        let weights = match gating {
            MoeGating::Softmax => renormalized(&probs, chosen),
            MoeGating::SoftmaxChosen => softmax_of(l, chosen),
        };
        for (&e, w) in chosen.iter().zip(weights) {
            routes.rows[e].push(row);
            routes.weights[e].push(w);
        }
    }
    routes
}

/// The `chosen` probabilities divided by their sum (at least 2^-14).
fn renormalized(probs: &[f32], chosen: &[usize]) -> Vec<f32> {
    let total: f32 = chosen.iter().map(|&e| probs[e]).sum();
    let total = total.max(6.103_515_6e-5);
    chosen.iter().map(|&e| probs[e] / total).collect()
}

/// A softmax over the `chosen` logits: their exponentials less the max,
/// summed in f64, times the reciprocal of the sum.
fn softmax_of(logits: &[f32], chosen: &[usize]) -> Vec<f32> {
    let max = chosen
        .iter()
        .fold(f32::NEG_INFINITY, |m, &e| m.max(logits[e]));
    let exps: Vec<f32> = chosen.iter().map(|&e| (logits[e] - max).exp()).collect();
    let sum: f64 = exps.iter().map(|&x| f64::from(x)).sum();
    let inv = (1.0 / sum) as f32;
    exps.into_iter().map(|x| x * inv).collect()
}

impl<B: Backend> Model<B> {
    /// The experts' feed-forward of the normed batch in `ws.h` into `ws.o`:
    /// the routed experts, then the shared one where the model has it.
    pub(super) fn moe_ffn(
        &self,
        ws: &mut Workspace<B>,
        router: &Linear<B::Weight>,
        experts: &[Expert<B::Weight>],
        shared: Option<&SharedExpert<B::Weight>>,
        moe: &MoeConfig,
        n: usize,
    ) -> Result<()> {
        self.routed_ffn(ws, router, experts, moe, n)?;
        match shared {
            Some(sh) => self.shared_ffn(ws, sh, moe.n_ff_shared, n),
            None => Ok(()),
        }
    }

    /// The shared expert of the normed batch in `ws.h`, weighted per token
    /// by the sigmoid of its gate, added into `ws.o`.
    fn shared_ffn(
        &self,
        ws: &mut Workspace<B>,
        sh: &SharedExpert<B::Weight>,
        ff: usize,
        n: usize,
    ) -> Result<()> {
        let (b, e) = (&*self.backend, self.cfg.n_embd);
        let Some(bufs) = ws.moe.as_mut() else {
            return Err(crate::ModelError::InvalidRequest(
                "a workspace without expert buffers".into(),
            ));
        };
        let x = &sh.ffn;
        let gate = x.gate.as_ref().ok_or_else(|| {
            crate::ModelError::Unsupported("a shared expert without a gate".into())
        })?;
        let outs = [&mut ws.g, &mut ws.u];
        self.linear_shared([gate, &x.up], &ws.h, n, [ff, ff], outs)?;
        b.glu(&mut ws.g, &ws.u, n * ff, self.cfg.act)?;
        self.linear(&x.down, &ws.g, n, e, &mut bufs.ye)?;
        b.matmul(&sh.weight_gate, &ws.h, n, &mut bufs.shared_gate)?;
        let mut gates = vec![0f32; n];
        b.read(&bufs.shared_gate, &mut gates)?;
        gates
            .iter_mut()
            .for_each(|g| *g = 1.0 / (1.0 + (-*g).exp()));
        b.scale_rows(&mut bufs.ye, e, &gates)?;
        b.add(&mut ws.o, &bufs.ye, n * e)?;
        Ok(())
    }

    /// The routed experts of the normed batch in `ws.h` into `ws.o`.
    fn routed_ffn(
        &self,
        ws: &mut Workspace<B>,
        router: &Linear<B::Weight>,
        experts: &[Expert<B::Weight>],
        moe: &MoeConfig,
        n: usize,
    ) -> Result<()> {
        let Some(bufs) = ws.moe.as_mut() else {
            return Err(crate::ModelError::InvalidRequest(
                "a workspace without expert buffers".into(),
            ));
        };
        self.linear(router, &ws.h, n, moe.n_expert, &mut bufs.router)?;
        let routes = self.read_routes(ws, moe, n)?;
        self.run_experts(ws, experts, &routes, moe.n_ff_exp, n)
    }

    /// The routes of `n` tokens from their router logits in the expert
    /// buffers, with their margins recorded where they are watched.
    pub(super) fn read_routes(
        &self,
        ws: &mut Workspace<B>,
        moe: &MoeConfig,
        n: usize,
    ) -> Result<Routes> {
        let Some(bufs) = ws.moe.as_mut() else {
            return Err(crate::ModelError::InvalidRequest(
                "a workspace without expert buffers".into(),
            ));
        };
        let mut logits = vec![0f32; n * moe.n_expert];
        self.backend.read(&bufs.router, &mut logits)?;
        let routes = route(&logits, moe.n_expert, moe.n_expert_used, moe.gating);
        if let Some(m) = &self.route_margins {
            let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
            for (have, &new) in m.iter_mut().zip(&routes.margins) {
                *have = have.min(new);
            }
        }
        Ok(routes)
    }

    /// The experts of `routes` over the normed batch in `ws.h` into
    /// `ws.o`, each expert's output scaled by its weight per token.
    pub(super) fn run_experts(
        &self,
        ws: &mut Workspace<B>,
        experts: &[Expert<B::Weight>],
        routes: &Routes,
        ff: usize,
        n: usize,
    ) -> Result<()> {
        let (b, e) = (&*self.backend, self.cfg.n_embd);
        b.write(&mut ws.o, &vec![0f32; n * e])?;
        if n == 1 && experts.iter().all(|x| x.gate.is_some()) {
            return self.moe_ffn_one(ws, experts, routes, ff);
        }
        let Some(bufs) = ws.moe.as_mut() else {
            return Err(crate::ModelError::InvalidRequest(
                "a workspace without expert buffers".into(),
            ));
        };
        for ((expert, rows), weights) in experts.iter().zip(&routes.rows).zip(&routes.weights) {
            if rows.is_empty() {
                continue;
            }
            let m = rows.len();
            b.gather_rows(&ws.h, rows, e, &mut bufs.xe)?;
            match &expert.gate {
                Some(gate) => {
                    let outs = [&mut ws.g, &mut ws.u];
                    self.linear_shared([gate, &expert.up], &bufs.xe, m, [ff, ff], outs)?;
                }
                None => {
                    self.linear(&expert.up, &bufs.xe, m, 2 * ff, &mut bufs.gate_up)?;
                    b.copy_cols(&bufs.gate_up, m, 2 * ff, 0, ff, &mut ws.g)?;
                    b.copy_cols(&bufs.gate_up, m, 2 * ff, ff, ff, &mut ws.u)?;
                }
            }
            b.glu(&mut ws.g, &ws.u, m * ff, self.cfg.act)?;
            self.linear(&expert.down, &ws.g, m, e, &mut bufs.ye)?;
            b.scale_rows(&mut bufs.ye, e, weights)?;
            b.add_rows(&mut ws.o, &bufs.ye, rows, e)?;
        }
        Ok(())
    }

    /// The experts' feed-forward of a lone token (a decode step of one
    /// sequence): every chosen expert reads the same input, so their gate
    /// and up products run as one shared product (one pass over the
    /// chosen experts' rows, the input converted once), then each
    /// expert's down product. The same numbers as expert by expert.
    fn moe_ffn_one(
        &self,
        ws: &mut Workspace<B>,
        experts: &[Expert<B::Weight>],
        routes: &Routes,
        ff: usize,
    ) -> Result<()> {
        let (b, e) = (&*self.backend, self.cfg.n_embd);
        let Some(bufs) = ws.moe.as_mut() else {
            return Err(crate::ModelError::InvalidRequest(
                "a workspace without expert buffers".into(),
            ));
        };
        let chosen: Vec<(&Expert<B::Weight>, f32)> = experts
            .iter()
            .zip(&routes.weights)
            .filter_map(|(x, w)| w.first().map(|&w| (x, w)))
            .collect();
        let held = bufs.one.len();
        let pairs = &mut bufs.one[..chosen.len().min(held)];
        let linears: Vec<&Linear<B::Weight>> = chosen
            .iter()
            .flat_map(|(x, _)| [x.gate.as_ref(), Some(&x.up)])
            .flatten()
            .collect();
        let weights: Vec<&B::Weight> = linears.iter().map(|l| &l.w).collect();
        let mut outs: Vec<&mut B::Buf> = pairs.iter_mut().flat_map(|(g, u)| [g, u]).collect();
        if outs.len() != weights.len() {
            return Err(crate::ModelError::InvalidRequest(
                "a token routed to more experts than the workspace holds".into(),
            ));
        }
        b.matmul_shared(&weights, &ws.h, 1, &mut outs)?;
        for (l, out) in linears.iter().zip(outs) {
            if let Some(bias) = &l.b {
                b.add_bias(out, 1, ff, bias)?;
            }
        }
        for ((expert, weight), (g, u)) in chosen.iter().zip(pairs.iter_mut()) {
            b.glu(g, u, ff, self.cfg.act)?;
            self.linear(&expert.down, g, 1, e, &mut bufs.ye)?;
            b.scale_rows(&mut bufs.ye, e, &[*weight])?;
            b.add_rows(&mut ws.o, &bufs.ye, &[0], e)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_pick_the_most_probable_experts_and_renormalize() {
        // Two tokens over four experts, two used each.
        let logits = [1.0, 3.0, 2.0, 0.0, /* */ 0.5, 0.5, -1.0, 0.5];
        let r = route(&logits, 4, 2, MoeGating::Softmax);
        assert_eq!(r.rows, vec![vec![1], vec![0, 1], vec![0], vec![]]);
        let (e1, e2) = (3f32.exp(), 2f32.exp());
        assert!((r.weights[1][0] - e1 / (e1 + e2)).abs() < 1e-6);
        assert!((r.weights[2][0] - e2 / (e1 + e2)).abs() < 1e-6);
        // A three-way tie: the lower indices win, with equal weights.
        assert_eq!(r.weights[0][0], 0.5);
        assert_eq!(r.weights[1][1], 0.5);
        for (rows, w) in r.rows.iter().zip(&r.weights) {
            assert_eq!(rows.len(), w.len());
        }
        assert!((r.margins[0] - (e2 - 1f32.exp()) / (e1 + e2 + 1f32.exp() + 1.0)).abs() < 1e-6);
        assert_eq!(r.margins[1], 0.0);
    }

    #[test]
    fn every_token_gets_exactly_its_experts_even_with_extreme_logits() {
        let logits = [f32::INFINITY, 0.0, f32::NEG_INFINITY, -1e30, 1e30, 5.0];
        for gating in [MoeGating::Softmax, MoeGating::SoftmaxChosen] {
            let r = route(&logits, 3, 2, gating);
            let served: usize = r.rows.iter().map(Vec::len).sum();
            assert_eq!(served, 4, "{gating:?}");
            assert!(r.rows.iter().all(|rows| rows.iter().all(|&t| t < 2)));
        }
    }

    #[test]
    fn softmax_over_the_chosen_weights_them_by_their_logits_alone() {
        // Three experts, two used: the two largest logits, weighted by a
        // softmax over those two (the third's logit plays no part).
        let logits = [2.0, -1.0, 1.0, /* */ 0.0, 4.0, 4.0];
        let r = route(&logits, 3, 2, MoeGating::SoftmaxChosen);
        assert_eq!(r.rows, vec![vec![0], vec![1], vec![0, 1]]);
        let w = 1.0 / (1.0 + (-1f32).exp());
        assert!((r.weights[0][0] - w).abs() < 1e-6);
        assert!((r.weights[2][0] - (1.0 - w)).abs() < 1e-6);
        // Equal logits share equally.
        assert_eq!((r.weights[1][0], r.weights[2][1]), (0.5, 0.5));
        // Margins are in probabilities over all experts, as for Softmax.
        let all = route(&logits, 3, 2, MoeGating::Softmax);
        assert_eq!(r.margins, all.margins);
    }
}
