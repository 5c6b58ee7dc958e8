//! # mesh-tls: who is calling, and may they
//!
//! Workload identity (SPIFFE), certificate loading and rotation, the mTLS
//! connector at the bottom of the outbound stack and the acceptor at the top
//! of the inbound stack (PeerAuthentication modes), then request
//! authentication (JWT) and authorization (Istio AuthorizationPolicy, Linkerd
//! Server / ServerAuthorization / AuthorizationPolicy). rustls 0.23 with the
//! aws-lc-rs provider only.
//!
//! The layers arrive with the mTLS and authorization issue.
//!
//! ## Gateway certificates
//!
//! The ingress gateway terminates TLS (`tls.mode: SIMPLE`) with the
//! certificate its Gateway server names by `credentialName`, read from a
//! credentials folder in the layout of mounted Kubernetes TLS secrets
//! ([`credentials`]):
//!
//! ```text
//! DIR/<credentialName>/tls.crt   PEM chain, leaf first
//! DIR/<credentialName>/tls.key   PEM private key (PKCS#8, RSA or EC)
//! ```
//!
//! The folder is watched and a rotated certificate is served without a
//! restart; [`sni`] picks among several servers' certificates on one port by
//! the client's SNI. Every TLS configuration uses the aws-lc-rs provider,
//! named explicitly ([`provider`]).

#![forbid(unsafe_code)]

pub mod credentials;
pub mod provider;
pub mod sni;
