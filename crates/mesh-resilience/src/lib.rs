//! # mesh-resilience: keeping failures small
//!
//! The outbound layers between the route decision and the connection:
//! fault injection (abort / delay), the whole-request timeout, retries with
//! per-try timeouts and retry budgets, connection-pool circuit breaking, and
//! outlier detection; on the inbound side, local rate limiting. Each one is a
//! tower `Layer` usable alone with a small typed policy, and inside the mesh
//! stack each takes its policy per request from the route decision.
//!
//! In request order: [`fault`], [`timeout`], [`retry`] (with [`budget`]),
//! [`pool`], [`outlier`]; inbound, [`rate_limit`].

#![forbid(unsafe_code)]

pub mod budget;
pub mod fault;
pub mod outlier;
pub mod pool;
pub mod rate_limit;
pub mod retry;
pub mod timeout;
