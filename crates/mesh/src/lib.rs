//! # mesh: the facade
//!
//! Assembles the layer crates into the outbound and inbound stacks
//! ([`stack`]), and those into the ways the mesh is deployed: the sidecar
//! runtime ([`sidecar`]: listeners, reload, drain), the ingress gateway
//! runtime ([`gateway`]: Gateway server ports, TLS termination and
//! passthrough), the in-process "proxyless" [`Client`], and, next, the mock
//! mesh. Below routing, the connector side lives here too: DNS for
//! ServiceEntry endpoints ([`dns`]), the HTTP/1.1 and HTTP/2 pools, the
//! opaque TCP / TLS path ([`tcp`]) and the loop guard ([`loop_guard`]). It holds no feature
//! logic of its own: routing lives in `mesh-route`, resilience in
//! `mesh-resilience`, identity in `mesh-tls`, telemetry in `mesh-telemetry`.

#![forbid(unsafe_code)]

pub use mesh_core as core;

pub use client::Client;

pub mod admin;
pub mod client;
mod cow_map;
pub mod dns;
pub mod gateway;
pub mod h1pool;
pub mod h2pool;
pub mod loop_guard;
pub mod server;
pub mod sidecar;
pub mod stack;
pub mod tcp;
pub mod upstream;
