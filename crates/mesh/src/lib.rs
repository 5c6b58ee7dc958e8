//! # mesh: the facade
//!
//! Assembles the layer crates into the outbound and inbound stacks, and those
//! into the three ways the mesh is deployed: the sidecar runtime (listeners,
//! drain), the in-process "proxyless" client, and the mock mesh for
//! integration tests. It holds no feature logic of its own.
//!
//! Today it re-exports the configuration core; the stacks arrive with the
//! data-plane issue.

#![forbid(unsafe_code)]

pub use mesh_core as core;
