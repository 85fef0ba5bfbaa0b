//! A decode step of one sequence takes the experts' lone-token path (the
//! chosen experts' gate and up products as one shared product); a prefill
//! batch takes the expert-by-expert path. Both must give the same logits
//! for the same position, for every mixture-of-experts layout.

use std::sync::Arc;
use worker_compute::cpu::CpuBackend;
use worker_compute::{KvType, TokenPos};
use worker_gguf::{GgmlType, GgufFile};
use worker_models::synthetic::{SyntheticSpec, write_model};
use worker_models::{Arch, Model, StepOutput, Want};

/// The logits of the last of `ids`: all in one batch, or all but the last
/// in one batch and the last alone.
fn last_logits(model: &Model<CpuBackend>, ids: &[u32], last_alone: bool) -> Vec<f32> {
    let n = ids.len();
    let mut ws = model.workspace(n, 1).expect("workspace");
    let mut kv = model.kv_cache(1, 64, KvType::F32, n).expect("kv");
    let mut out = StepOutput::new(model.vocab_size());
    let pos = |range: std::ops::Range<usize>| -> Vec<TokenPos> {
        range
            .map(|p| TokenPos {
                seq: 0,
                pos: p as u32,
            })
            .collect()
    };
    let batches: Vec<(usize, usize)> = if last_alone {
        vec![(0, n - 1), (n - 1, n)]
    } else {
        vec![(0, n)]
    };
    for (start, end) in batches {
        let r = start..end;
        let logits_for = [r.len() - 1];
        let rows: &[usize] = if r.end == n { &logits_for } else { &[] };
        model
            .forward_for(
                &mut ws,
                &mut kv,
                &ids[r.clone()],
                &pos(r),
                rows,
                Want::Logits,
                &mut out,
            )
            .expect("forward");
    }
    out.logits(0).expect("logits").to_vec()
}

#[test]
fn a_lone_token_gets_the_batch_numbers_from_its_experts() {
    let specs = [
        SyntheticSpec::conformance(Arch::Qwen3Moe, GgmlType::Q4_K),
        SyntheticSpec::conformance(Arch::GptOss, GgmlType::MXFP4),
        SyntheticSpec::conformance_llama_moe(GgmlType::Q8_0),
        SyntheticSpec::conformance_gemma4_moe(GgmlType::Q4_K),
    ];
    let dir = std::env::temp_dir().join(format!("llorch-moe-decode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    for spec in specs {
        let path = dir.join(format!("{}.gguf", spec.variant()));
        write_model(&spec, &path).expect("write model");
        let file = Arc::new(GgufFile::open(&path).expect("open"));
        let backend = Arc::new(CpuBackend::new(2).expect("backend"));
        let model = Model::load(backend, file).expect("load");
        let ids: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 500).collect();
        let batch = last_logits(&model, &ids, false);
        let alone = last_logits(&model, &ids, true);
        assert_eq!(batch.len(), alone.len());
        let worst = batch
            .iter()
            .zip(&alone)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-4,
            "{}: the lone token's logits differ by {worst}",
            spec.variant()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
