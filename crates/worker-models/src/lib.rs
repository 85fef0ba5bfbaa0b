//! Model architectures read from GGUF metadata into one typed config each
//! (Llama, Qwen2, Phi-3, GPT-2, Gemma 3), their forward pass on a compute
//! backend, the KV cache, sampling and the generation engine.
//!
//! Status: not implemented yet. The engine issue fills this crate; until
//! then it exports nothing.
