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

#![forbid(unsafe_code)]
