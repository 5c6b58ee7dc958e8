//! The resource schema: serde types spelled exactly as the upstream APIs spell
//! them (camelCase fields, upper-case enum values), with unknown fields
//! rejected so that a typo never silently changes behaviour.
//!
//! These types describe what users write. Layers convert them into their own
//! small policies; nothing here decides runtime behaviour.

pub mod common;
pub mod gateway_api;
pub mod istio_networking;
pub mod istio_operator;
pub mod istio_security;
pub mod istio_telemetry;
pub mod linkerd_policy;
pub mod linkerd_profile;
