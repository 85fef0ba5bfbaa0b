//! The HTTP client setup shared by `fetch` (downloads) and `serve` (the
//! report to the operator).
//!
//! TLS is rustls with the *ring* provider, the one the operator's client
//! uses too; it is installed as the process default before any client is
//! built, because reqwest is built without a provider of its own.
//! Certificates are checked against the system's roots.

/// A client builder with TLS ready.
pub fn builder() -> reqwest::ClientBuilder {
    // Fails only when a provider is already installed: that one is kept.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
