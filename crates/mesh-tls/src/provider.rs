//! The one cryptography provider of the mesh: rustls on aws-lc-rs.
//!
//! Every TLS configuration the mesh builds (the gateway's server side now,
//! mTLS later) names this provider explicitly instead of relying on
//! rustls' process-wide default: the workspace builds rustls without `ring`,
//! and an explicit provider keeps it that way even if some other crate in a
//! user's binary installs a different process default.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The aws-lc-rs provider with rustls' default cipher suites and key
/// exchange groups.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_provider_is_aws_lc_rs() {
        let p = super::provider();
        assert!(!p.cipher_suites.is_empty());
        // The aws-lc-rs provider is the only one compiled in.
        let ours = rustls::crypto::aws_lc_rs::default_provider();
        assert_eq!(p.cipher_suites.len(), ours.cipher_suites.len());
    }
}
