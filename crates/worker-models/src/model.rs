//! The forward pass, written once for every architecture and backend.

mod attention;
mod gemma4;
mod hybrid;
mod moe;

use crate::config::{FfnKind, ModelConfig};
use crate::error::{ModelError, Result};
use crate::rope::RopeOverrides;
use crate::sampling::{StepOutput, Want};
use crate::weights::{Ffn, Layer, Linear, Mixer, Norm, Weights};
use std::sync::Arc;
use worker_compute::{AttnParams, Backend, KvSpec, KvType, RopeParams, TokenPos};
use worker_gguf::GgufFile;

/// A loaded model on a backend.
pub struct Model<B: Backend> {
    cfg: ModelConfig,
    backend: Arc<B>,
    weights: Weights<B::Weight>,
    rope: Vec<Option<RopeParams>>,
    attn: Vec<AttnParams>,
    vocab: usize,
    file: Arc<GgufFile>,
    /// When set, each forward pass of a mixture of experts records, per
    /// batch row, its smallest routing margin over the layers.
    route_margins: Option<std::sync::Mutex<Vec<f32>>>,
}

impl<B: Backend> std::fmt::Debug for Model<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("cfg", &self.cfg)
            .field("vocab", &self.vocab)
            .finish()
    }
}

/// Scratch buffers for batches of up to `max_batch` tokens.
pub struct Workspace<B: Backend> {
    max_batch: usize,
    x: B::Buf,
    h: B::Buf,
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    qkv: B::Buf,
    attn: B::Buf,
    o: B::Buf,
    g: B::Buf,
    u: B::Buf,
    t: B::Buf,
    logits: B::Buf,
    max_logits: usize,
    /// The expert feed-forward's buffers, for a mixture of experts.
    moe: Option<moe::MoeBufs<B>>,
    /// The recurrent layers' and gated attention's buffers, for a hybrid
    /// model.
    hybrid: Option<hybrid::HybridBufs<B>>,
    /// The per-layer inputs' and the dense branch's buffers (Gemma 4).
    gemma4: Option<gemma4::Gemma4Bufs<B>>,
}

impl<B: Backend> std::fmt::Debug for Workspace<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

impl<B: Backend> Model<B> {
    /// Loads the model in `file` onto `backend`.
    pub fn load(backend: Arc<B>, file: Arc<GgufFile>) -> Result<Self> {
        Self::load_with(backend, file, &RopeOverrides::default())
    }

    /// [`Model::load`] with the user's RoPE settings over the file's.
    pub fn load_with(backend: Arc<B>, file: Arc<GgufFile>, rope: &RopeOverrides) -> Result<Self> {
        let cfg = ModelConfig::from_metadata_with(file.metadata(), rope)?;
        let weights = Weights::load(&*backend, &file, &cfg)?;
        let vocab = file
            .header()
            .tensor("token_embd.weight")
            .map(|t| t.n_rows() as usize)
            .ok_or_else(|| ModelError::MissingTensor {
                name: "token_embd.weight".into(),
                arch: cfg.arch.name().into(),
            })?;
        let rope = rope_params(&cfg, &weights, None);
        let attn = (0..cfg.n_layer)
            .map(|il| AttnParams {
                n_head: cfg.n_head,
                n_head_kv: cfg.layer(il).n_head_kv,
                head_dim: cfg.layer(il).head_dim,
                scale: cfg.kq_scale,
                window: cfg.window(il),
                softcap: cfg.attn_softcap,
            })
            .collect();
        Ok(Model {
            cfg,
            backend,
            weights,
            rope,
            attn,
            vocab,
            file,
            route_margins: None,
        })
    }

    /// Makes every forward pass record its routing margins (a mixture of
    /// experts only): see [`Model::route_margins`].
    pub fn watch_routes(&mut self) {
        self.route_margins = Some(std::sync::Mutex::new(Vec::new()));
    }

    /// Per row of the last batch, the smallest routing margin over its
    /// layers: how far the probability of the last expert a token chose
    /// was above the next one's. A small margin is a near-tie, where
    /// rounding elsewhere can swap the two experts. Empty unless
    /// [`Model::watch_routes`] was called.
    pub fn route_margins(&self) -> Vec<f32> {
        self.route_margins.as_ref().map_or_else(Vec::new, |m| {
            m.lock().unwrap_or_else(|e| e.into_inner()).clone()
        })
    }

    /// Sets the context length each sequence will use. RoPE may depend on
    /// it: LongRoPE models use their long factors beyond the original
    /// training context and their short ones within it. [`Model::load`]
    /// assumes a context within the original; [`crate::Generator`] and
    /// [`crate::Scheduler`] call this with theirs.
    pub fn set_context_length(&mut self, n_ctx: usize) {
        self.rope = rope_params(&self.cfg, &self.weights, Some(n_ctx));
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Logits per token.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// What the backend reports about itself.
    pub fn backend_info(&self) -> worker_compute::BackendInfo {
        self.backend.info()
    }

    /// The model file.
    pub fn file(&self) -> &Arc<GgufFile> {
        &self.file
    }

    /// Buffers for batches of up to `max_batch` tokens, of which up to
    /// `max_logits` ask for logits.
    pub fn workspace(&self, max_batch: usize, max_logits: usize) -> Result<Workspace<B>> {
        let c = &self.cfg;
        let b = &*self.backend;
        let (q_dim, kv_dim) = (c.n_head * c.head_dim, c.n_head_kv * c.head_dim);
        let ff = match (c.ffn, c.moe) {
            (FfnKind::FusedGated, _) => 2 * c.n_ff,
            // Experts beside a dense feed-forward use both widths.
            (_, Some(m)) if m.beside_dense => c.n_ff.max(m.n_ff_exp),
            _ => c.ff_width().max(c.moe.map_or(0, |m| m.n_ff_shared)),
        };
        let n = max_batch;
        Ok(Workspace {
            max_batch,
            x: b.buf(n * c.n_embd)?,
            h: b.buf(n * c.n_embd.max(q_dim))?,
            q: b.buf(n * q_dim)?,
            k: b.buf(n * kv_dim)?,
            v: b.buf(n * kv_dim)?,
            qkv: b.buf(n * (q_dim + 2 * kv_dim))?,
            attn: b.buf(n * q_dim)?,
            o: b.buf(n * c.n_embd)?,
            g: b.buf(n * ff)?,
            u: b.buf(n * ff)?,
            // Only the fused gate+up wiring splits into a third buffer.
            t: b.buf(if c.ffn == FfnKind::FusedGated {
                n * c.n_ff
            } else {
                1
            })?,
            logits: b.buf(max_logits * self.vocab)?,
            max_logits,
            moe: c
                .moe
                .map(|m| moe::MoeBufs::new(b, &m, n, c.n_embd, self.weights.fused_experts()))
                .transpose()?,
            hybrid: c
                .recurrent
                .as_ref()
                .map(|r| hybrid::HybridBufs::new(b, r, q_dim, n))
                .transpose()?,
            gemma4: (c.per_layer_input.is_some() || c.moe.is_some_and(|m| m.beside_dense))
                .then(|| {
                    let width = c.per_layer_input.unwrap_or(0);
                    gemma4::Gemma4Bufs::new(b, n, c.n_embd, c.n_layer, width)
                })
                .transpose()?,
        })
    }

    /// The shape of a KV cache for `n_seq` sequences of `n_ctx` positions.
    pub fn kv_spec(&self, n_seq: usize, n_ctx: usize, ty: KvType, max_batch: usize) -> KvSpec {
        self.cfg.kv_spec(n_seq, n_ctx, ty, max_batch)
    }

    /// A KV cache for `n_seq` sequences of `n_ctx` positions.
    pub fn kv_cache(
        &self,
        n_seq: usize,
        n_ctx: usize,
        ty: KvType,
        max_batch: usize,
    ) -> Result<B::Kv> {
        let spec = self.kv_spec(n_seq, n_ctx, ty, max_batch);
        if !spec.is_uniform() && !self.backend.layered_kv() {
            return Err(ModelError::Unsupported(format!(
                "{} keeps K/V of another width in some layers, or reads an earlier layer's in \
                 some: the {} backend's cache cannot",
                self.cfg.arch.name(),
                self.backend.info().kind.as_str()
            )));
        }
        Ok(self.backend.kv(&spec)?)
    }

    /// A pre-block norm of `x` into `h` (a copy of `x` where the
    /// architecture has no such norm).
    fn pre_norm(
        &self,
        x: &B::Buf,
        rows: usize,
        n: Option<&Norm<B::Weight>>,
        h: &mut B::Buf,
    ) -> Result<()> {
        let e = self.cfg.n_embd;
        self.backend.copy_cols(x, rows, e, 0, e, h)?;
        match n {
            Some(n) => self.norm(h, rows, n),
            None => Ok(()),
        }
    }

    /// A block's output `o` into the residual stream `x`, after its
    /// post-norm and residual multiplier where the architecture has them.
    fn residual(
        &self,
        x: &mut B::Buf,
        o: &mut B::Buf,
        rows: usize,
        post: Option<&Norm<B::Weight>>,
    ) -> Result<()> {
        let (b, e) = (&*self.backend, self.cfg.n_embd);
        if let Some(pn) = post {
            self.norm(o, rows, pn)?;
        }
        if let Some(s) = self.cfg.residual_scale {
            b.scale(o, rows * e, s)?;
        }
        b.add(x, o, rows * e)?;
        Ok(())
    }

    fn norm(&self, x: &mut B::Buf, rows: usize, n: &Norm<B::Weight>) -> Result<()> {
        let (b, c) = (&*self.backend, &self.cfg);
        match &n.b {
            Some(bias) => b.layer_norm(x, rows, c.n_embd, &n.w, Some(bias), c.norm_eps)?,
            None => b.rms_norm(x, rows, c.n_embd, Some(&n.w), c.norm_eps)?,
        }
        Ok(())
    }

    fn linear(
        &self,
        l: &Linear<B::Weight>,
        x: &B::Buf,
        n: usize,
        dim_out: usize,
        out: &mut B::Buf,
    ) -> Result<()> {
        self.backend.matmul(&l.w, x, n, out)?;
        if let Some(bias) = &l.b {
            self.backend.add_bias(out, n, dim_out, bias)?;
        }
        Ok(())
    }

    /// [`Model::linear`] for several layers that read the same input (Q, K
    /// and V; gate and up), so the backend may convert it once; `dims` are
    /// their output widths.
    fn linear_shared<const N: usize>(
        &self,
        ls: [&Linear<B::Weight>; N],
        x: &B::Buf,
        n: usize,
        dims: [usize; N],
        mut outs: [&mut B::Buf; N],
    ) -> Result<()> {
        self.backend
            .matmul_shared(&ls.map(|l| &l.w), x, n, &mut outs)?;
        for ((l, out), dim) in ls.into_iter().zip(outs).zip(dims) {
            if let Some(bias) = &l.b {
                self.backend.add_bias(out, n, dim, bias)?;
            }
        }
        Ok(())
    }

    /// The dense feed-forward of the normed batch in `ws.h` into `ws.o`.
    fn dense_ffn(
        &self,
        ws: &mut Workspace<B>,
        gate: Option<&Linear<B::Weight>>,
        up: &Linear<B::Weight>,
        down: &Linear<B::Weight>,
        n: usize,
        ff: usize,
    ) -> Result<()> {
        let (b, c) = (&*self.backend, &self.cfg);
        match (c.ffn, gate) {
            (FfnKind::Gated, Some(gate)) => {
                let outs = [&mut ws.g, &mut ws.u];
                self.linear_shared([gate, up], &ws.h, n, [ff, ff], outs)?;
                b.glu(&mut ws.g, &ws.u, n * ff, c.act)?;
            }
            (FfnKind::FusedGated, _) => {
                self.linear(up, &ws.h, n, 2 * ff, &mut ws.u)?;
                b.copy_cols(&ws.u, n, 2 * ff, 0, ff, &mut ws.g)?;
                b.copy_cols(&ws.u, n, 2 * ff, ff, ff, &mut ws.t)?;
                b.glu(&mut ws.g, &ws.t, n * ff, c.act)?;
            }
            _ => {
                self.linear(up, &ws.h, n, ff, &mut ws.g)?;
                b.act(&mut ws.g, n * ff, c.act)?;
            }
        }
        self.linear(down, &ws.g, n, c.n_embd, &mut ws.o)
    }

    /// Runs a batch: `ids[i]` at `tokens[i]`. Writes the logits of the batch
    /// rows listed in `logits_for` to `out` (`logits_for.len() * vocab`).
    pub fn forward(
        &self,
        ws: &mut Workspace<B>,
        kv: &mut B::Kv,
        ids: &[u32],
        tokens: &[TokenPos],
        logits_for: &[usize],
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let m = self.run(ws, kv, ids, tokens, logits_for)?;
        out.resize(m * self.vocab, 0.0);
        if m > 0 {
            self.backend.read(&ws.logits, out)?;
        }
        Ok(())
    }

    /// Runs a batch like [`Model::forward`], but leaves in `out` only what
    /// `want` asks of each row listed in `logits_for`: the argmax, the top
    /// candidates, or the whole row. On a device, the first two keep the
    /// logits there.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_for(
        &self,
        ws: &mut Workspace<B>,
        kv: &mut B::Kv,
        ids: &[u32],
        tokens: &[TokenPos],
        logits_for: &[usize],
        want: Want,
        out: &mut StepOutput,
    ) -> Result<()> {
        let m = self.run(ws, kv, ids, tokens, logits_for)?;
        out.want = want;
        out.vocab = self.vocab;
        match want {
            Want::Argmax => self
                .backend
                .argmax_rows(&ws.logits, m, self.vocab, &mut out.ids)?,
            Want::Draw => self.backend.draw_rows(
                &ws.logits,
                m,
                self.vocab,
                &out.temps,
                &out.us,
                &mut out.ids,
            )?,
            Want::Top(n) => {
                self.backend
                    .top_k_rows(&ws.logits, m, self.vocab, n, &mut out.top)?;
            }
            Want::Logits => {}
        }
        // The whole rows, for sampling on the host or beside the picks
        // (log-probabilities).
        out.has_logits = want == Want::Logits || out.keep_logits;
        if out.has_logits {
            out.logits.resize(m * self.vocab, 0.0);
            if m > 0 {
                self.backend.read(&ws.logits, &mut out.logits)?;
            }
        }
        Ok(())
    }

    /// The forward pass; leaves the logits of the `logits_for` rows in
    /// `ws.logits` and returns how many rows that is.
    fn run(
        &self,
        ws: &mut Workspace<B>,
        kv: &mut B::Kv,
        ids: &[u32],
        tokens: &[TokenPos],
        logits_for: &[usize],
    ) -> Result<usize> {
        let n = ids.len();
        if n == 0 || n > ws.max_batch || tokens.len() != n || logits_for.len() > ws.max_logits {
            return Err(ModelError::InvalidRequest(format!(
                "batch of {n} tokens ({} logits) does not fit a workspace of {} ({})",
                logits_for.len(),
                ws.max_batch,
                ws.max_logits
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(ModelError::InvalidRequest(format!(
                "token id {bad} is beyond the vocabulary of {}",
                self.vocab
            )));
        }
        // The backend may record the step's ops and run them as one launch;
        // the step ends (what was recorded runs) even when an op failed.
        // A mixture of experts reads its routes mid-step, so its steps are
        // never recorded as one launch; nor are a hybrid model's.
        let record = self.cfg.moe.is_none() && self.cfg.recurrent.is_none();
        if let Some(m) = &self.route_margins {
            let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
            m.clear();
            m.resize(n, f32::INFINITY);
        }
        if record {
            self.backend.begin_step(n)?;
        }
        let result = self.ops(ws, kv, ids, tokens, logits_for);
        let ended = if record {
            self.backend.end_step()
        } else {
            Ok(())
        };
        let m = result?;
        ended?;
        Ok(m)
    }

    /// The ops of [`Model::run`]'s forward pass.
    fn ops(
        &self,
        ws: &mut Workspace<B>,
        kv: &mut B::Kv,
        ids: &[u32],
        tokens: &[TokenPos],
        logits_for: &[usize],
    ) -> Result<usize> {
        self.embed(ws, ids, tokens)?;
        for (il, layer) in self.weights.layers.iter().enumerate() {
            self.block(ws, kv, il, layer, tokens)?;
        }
        self.head(ws, logits_for)
    }

    /// The batch's embeddings into `ws.x` (and the per-layer inputs, where
    /// the model has them).
    fn embed(&self, ws: &mut Workspace<B>, ids: &[u32], tokens: &[TokenPos]) -> Result<()> {
        let n = ids.len();
        let (b, c, w) = (&*self.backend, &self.cfg, &self.weights);
        let e = c.n_embd;
        b.get_rows(&w.tok_embd, ids, &mut ws.x)?;
        if let Some(s) = c.embd_scale {
            b.scale(&mut ws.x, n * e, s)?;
        }
        if let Some(pos_embd) = &w.pos_embd {
            let positions: Vec<u32> = tokens.iter().map(|t| t.pos).collect();
            b.get_rows(pos_embd, &positions, &mut ws.h)?;
            b.add(&mut ws.x, &ws.h, n * e)?;
        }
        self.per_layer_inputs(ws, ids)
    }

    /// Block `il` over the residual stream in `ws.x`.
    fn block(
        &self,
        ws: &mut Workspace<B>,
        kv: &mut B::Kv,
        il: usize,
        layer: &Layer<B::Weight>,
        tokens: &[TokenPos],
    ) -> Result<()> {
        let n = tokens.len();
        self.pre_norm(&ws.x, n, layer.attn_norm.as_ref(), &mut ws.h)?;
        match &layer.mixer {
            Mixer::Attention(a) => self.attention_block(ws, kv, il, a, tokens)?,
            Mixer::Recurrent(d) => self.delta_block(ws, kv, il, d, tokens)?,
        }
        self.residual(&mut ws.x, &mut ws.o, n, layer.post_attn_norm.as_ref())?;
        self.pre_norm(&ws.x, n, layer.ffn_norm.as_ref(), &mut ws.h)?;
        self.ffn(ws, il, &layer.ffn, n)?;
        self.residual(&mut ws.x, &mut ws.o, n, layer.post_ffn_norm.as_ref())?;
        self.per_layer_output(ws, il, layer, n)
    }

    /// Block `il`'s feed-forward of the normed batch in `ws.h` into `ws.o`.
    fn ffn(&self, ws: &mut Workspace<B>, il: usize, ffn: &Ffn<B::Weight>, n: usize) -> Result<()> {
        match (ffn, &self.cfg.moe) {
            (
                Ffn::Experts {
                    router,
                    experts,
                    shared,
                },
                Some(moe),
            ) => self.moe_ffn(ws, router, experts, shared.as_ref(), moe, n),
            (Ffn::Dense { gate, up, down }, _) => {
                let ff = self.cfg.layer(il).n_ff;
                self.dense_ffn(ws, gate.as_ref(), up, down, n, ff)
            }
            (Ffn::BesideDense(f), Some(moe)) => self.beside_dense_ffn(ws, il, f, moe, n),
            (Ffn::Experts { .. } | Ffn::BesideDense(_), None) => Err(ModelError::InvalidRequest(
                "experts without an expert configuration".into(),
            )),
        }
    }

    /// The logits of the batch rows `logits_for` into `ws.logits`; how
    /// many rows that is.
    fn head(&self, ws: &mut Workspace<B>, logits_for: &[usize]) -> Result<usize> {
        let (b, c, w) = (&*self.backend, &self.cfg, &self.weights);
        let m = logits_for.len();
        if m == 0 {
            return Ok(0);
        }
        b.gather_rows(&ws.x, logits_for, c.n_embd, &mut ws.h)?;
        self.norm(&mut ws.h, m, &w.output_norm)?;
        match &w.output {
            Some(output) => self.linear(output, &ws.h, m, self.vocab, &mut ws.logits)?,
            // Tied: the embedding table is the projection.
            None => self.backend.matmul(&w.tok_embd, &ws.h, m, &mut ws.logits)?,
        }
        if let Some(s) = c.logit_scale {
            b.scale(&mut ws.logits, m * self.vocab, 1.0 / s)?;
        }
        if let Some(cap) = c.final_softcap {
            b.softcap(&mut ws.logits, m * self.vocab, cap)?;
        }
        Ok(m)
    }
}

/// Each layer's RoPE parameters for sequences of `n_ctx` positions (`None`:
/// within the original training context).
fn rope_params<W>(
    cfg: &ModelConfig,
    weights: &Weights<W>,
    n_ctx: Option<usize>,
) -> Vec<Option<RopeParams>> {
    (0..cfg.n_layer)
        .map(|il| {
            cfg.rope.as_ref().filter(|_| cfg.has_rope(il)).map(|r| {
                let global_only = cfg.rope_factors_global_only && cfg.is_swa(il);
                let factors = match (&weights.rope_freqs, &weights.long_rope) {
                    _ if global_only => None,
                    (Some(f), _) => Some(f.clone()),
                    (None, Some(lr)) if n_ctx.is_some_and(|n| n > r.n_ctx_orig) => {
                        Some(lr.long.clone())
                    }
                    (None, Some(lr)) => Some(lr.short.clone()),
                    (None, None) => None,
                };
                r.layer(cfg.is_swa(il), factors)
            })
        })
        .collect()
}
