//! Istio networking resources (networking.istio.io v1alpha3, v1beta1, v1).
mod destination_rule;
mod gateway;
mod service_entry;
mod virtual_service;
pub use destination_rule::*;
pub use gateway::*;
pub use service_entry::*;
pub use virtual_service::*;
