//! # mesh-route: which service, subset and endpoint a request goes to
//!
//! Second stage of the outbound flow (after telemetry opens the span): the
//! route layer loads the current `mesh_core::snapshot::Snapshot`, matches the
//! request's host and attributes against the VirtualService, HTTPRoute or
//! ServiceProfile rules for that host, and stores the resulting route decision
//! in the request's extensions for the layers below it (fault, mirror,
//! timeout, retry, balance). It also holds the load balancers, header and URI
//! rewrites, redirects, mirroring, and the ingress-gateway and egress
//! (ServiceEntry) routing.

#![forbid(unsafe_code)]

pub mod balance;
pub mod decision;
pub mod explain;
pub mod gateway;
pub mod layer;
pub mod matcher;
pub mod mirror;
pub mod profile;
pub mod random;
pub mod routing;
pub mod tcp_route;
pub mod xroute;
