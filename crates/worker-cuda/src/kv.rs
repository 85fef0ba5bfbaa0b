//! The KV cache in VRAM: per layer, K and V of every sequence, f16 or f32.
//!
//! Same layout as the CPU cache: sequence-major, `capacity` slots of
//! `kv_dim` values each, position p in slot p % capacity (windowed layers
//! keep a ring of the window plus one batch).

use crate::memory::Counted;
use worker_compute::{KvSpec, KvType};

/// One layer's K and V.
#[derive(Debug)]
pub struct LayerKv {
    /// Slots per sequence.
    pub capacity: usize,
    /// Keys (raw f16 or f32 bytes).
    pub k: Counted<u8>,
    /// Values.
    pub v: Counted<u8>,
}

/// The KV cache of every layer and sequence.
#[derive(Debug)]
pub struct CudaKv {
    /// Its shape.
    pub spec: KvSpec,
    /// Per layer.
    pub layers: Vec<LayerKv>,
}

impl CudaKv {
    /// Bytes per cached value ([`KvType::elem_bytes`]).
    pub fn elem_bytes(ty: KvType) -> usize {
        ty.elem_bytes()
    }
}
