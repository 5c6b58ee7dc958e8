//! (being written)

use crate::validate::{Checker, Validate};
use serde::{Deserialize, Serialize};

/// Placeholder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Server {}

impl Validate for Server {
    fn validate(&self, _cx: &mut Checker) {}
}

/// Placeholder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerAuthorization {}

impl Validate for ServerAuthorization {
    fn validate(&self, _cx: &mut Checker) {}
}

/// Placeholder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicy {}

impl Validate for AuthorizationPolicy {
    fn validate(&self, _cx: &mut Checker) {}
}

/// Placeholder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshTlsAuthentication {}

impl Validate for MeshTlsAuthentication {
    fn validate(&self, _cx: &mut Checker) {}
}

/// Placeholder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAuthentication {}

impl Validate for NetworkAuthentication {
    fn validate(&self, _cx: &mut Checker) {}
}

/// Placeholder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpLocalRateLimitPolicy {}

impl Validate for HttpLocalRateLimitPolicy {
    fn validate(&self, _cx: &mut Checker) {}
}
