//! Where llorch keeps downloaded and built things on a machine.

use std::path::PathBuf;

/// File name of the default model in the cache.
pub const DEFAULT_MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// The cache directory: `$LLORCH_CACHE`, else `~/.cache/llorch`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("LLORCH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/llorch")
        })
}

/// The default model (Gemma 3 270M Q4_K_M, fetched by
/// `scripts/fetch-model.sh`): `$LLORCH_TEST_MODEL` when set, else its place
/// in the cache.
pub fn default_model_path() -> PathBuf {
    std::env::var_os("LLORCH_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("models").join(DEFAULT_MODEL_FILE))
}
