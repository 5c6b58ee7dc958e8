//! Server certificates chosen by SNI: several gateway servers on one port,
//! each with its hosts and its own certificate.
//!
//! Place in the flow: the TLS handshake of an ingress gateway listener, the
//! step before HTTP. An Istio Gateway may declare several `HTTPS` servers on
//! port 443, one per certificate (`api.example.com` with `api-cert`,
//! `*.example.org` with `org-cert`); the client's SNI picks among them the
//! way a request's Host picks a server: an exact host first, then the most
//! specific `*.` wildcard, then a server for `*`. A client that sends no SNI
//! (connecting by IP address) gets the port's default certificate: the
//! first server on the port, in configuration order, whose certificate
//! loaded. An SNI that no server names fails the handshake, as it would at
//! an Istio gateway with no filter chain for that name.
//!
//! The table is swapped whole ([`SniResolver::store`]) when the
//! configuration or a certificate changes; handshakes read it with one
//! atomic load, so rotation needs no restart and no new listener.
//!
//! ```
//! use std::sync::Arc;
//! use mesh_tls::sni::{SniResolver, SniTable, server_config};
//! let resolver = Arc::new(SniResolver::new(SniTable::default()));
//! let config = server_config(Arc::clone(&resolver)).unwrap();
//! assert_eq!(config.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificates of one TLS port, by the hosts they serve.
#[derive(Clone, Debug, Default)]
pub struct SniTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` by its suffix `.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    any: Option<Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniTable {
    /// Adds a server's hosts (Gateway spelling: `[namespace/]host`, `*.`
    /// wildcards, `*`) with its certificate. The first server to name a host
    /// keeps it; the first server added is the default for clients without
    /// SNI.
    pub fn insert<'a>(&mut self, hosts: impl IntoIterator<Item = &'a str>, key: Arc<CertifiedKey>) {
        for host in hosts {
            // The namespace part restricts which VirtualServices bind; it
            // plays no part in the handshake.
            let host = host.rsplit_once('/').map_or(host, |(_, h)| h);
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            if host == "*" {
                self.any.get_or_insert_with(|| Arc::clone(&key));
            } else if let Some(suffix) = host.strip_prefix('*') {
                self.wildcard
                    .entry(suffix.to_owned())
                    .or_insert_with(|| Arc::clone(&key));
            } else {
                self.exact.entry(host).or_insert_with(|| Arc::clone(&key));
            }
        }
        self.default.get_or_insert(key);
    }

    /// Whether no certificate is known.
    pub fn is_empty(&self) -> bool {
        self.default.is_none()
    }

    /// The certificate for a client's SNI: exact, then the most specific
    /// wildcard, then `*`; without SNI, the default.
    pub fn select(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let Some(name) = sni else {
            return self.default.as_ref();
        };
        let name = name.trim_end_matches('.');
        let lowered;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = name.to_ascii_lowercase();
            lowered.as_str()
        } else {
            name
        };
        self.exact
            .get(name)
            .or_else(|| {
                name.match_indices('.')
                    .find_map(|(i, _)| self.wildcard.get(&name[i..]))
            })
            .or(self.any.as_ref())
    }
}

/// A [`ResolvesServerCert`] over a swappable [`SniTable`].
#[derive(Debug)]
pub struct SniResolver {
    table: ArcSwap<SniTable>,
}

impl SniResolver {
    /// A resolver serving `table`.
    pub fn new(table: SniTable) -> Self {
        SniResolver {
            table: ArcSwap::from_pointee(table),
        }
    }

    /// Replaces the table; handshakes from now on use the new one.
    pub fn store(&self, table: SniTable) {
        self.table.store(Arc::new(table));
    }

    /// The table in force.
    pub fn load(&self) -> Arc<SniTable> {
        self.table.load_full()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = client_hello.server_name();
        let found = self.table.load().select(sni).cloned();
        if found.is_none() {
            tracing::debug!(sni, "no gateway server certificate for this name");
        }
        found
    }
}

/// A TLS server configuration for a gateway port: aws-lc-rs (named
/// explicitly, see [`crate::provider`]), TLS 1.2 and 1.3, no client
/// certificates (`SIMPLE` mode), certificates from `resolver`, and ALPN
/// offering HTTP/2 then HTTP/1.1.
pub fn server_config(resolver: Arc<SniResolver>) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(crate::provider::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn key() -> Arc<CertifiedKey> {
        let pair = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_owned()])
            .unwrap()
            .self_signed(&pair)
            .unwrap();
        let der = rustls_pki_types::PrivateKeyDer::try_from(pair.serialize_der()).unwrap();
        let provider = crate::provider::provider();
        let signing = provider.key_provider.load_private_key(der).unwrap();
        Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing))
    }

    #[test]
    fn exact_then_most_specific_wildcard_then_any() {
        let (api, wild, deep, any) = (key(), key(), key(), key());
        let mut t = SniTable::default();
        t.insert(["prod/api.example.com"], Arc::clone(&api));
        t.insert(["*.example.com"], Arc::clone(&wild));
        t.insert(["./*.eu.example.com"], Arc::clone(&deep));
        t.insert(["*"], Arc::clone(&any));
        let pick = |sni| t.select(sni).unwrap();
        assert!(Arc::ptr_eq(pick(Some("api.example.com")), &api));
        assert!(Arc::ptr_eq(pick(Some("API.example.com.")), &api));
        assert!(Arc::ptr_eq(pick(Some("www.example.com")), &wild));
        assert!(Arc::ptr_eq(pick(Some("a.eu.example.com")), &deep));
        assert!(Arc::ptr_eq(pick(Some("example.com")), &any));
        assert!(
            Arc::ptr_eq(pick(None), &api),
            "the first server is the default"
        );
    }

    #[test]
    fn unknown_names_have_no_certificate_without_a_catch_all() {
        let mut t = SniTable::default();
        assert!(t.is_empty());
        assert!(t.select(None).is_none());
        let api = key();
        t.insert(["api.example.com"], Arc::clone(&api));
        t.insert(["api.example.com"], key());
        assert!(Arc::ptr_eq(
            t.select(Some("api.example.com")).unwrap(),
            &api
        ));
        assert!(t.select(Some("other.example.com")).is_none());
    }
}
