//! (being written)

use crate::validate::{Checker, Validate};
use serde::{Deserialize, Serialize};

/// Placeholder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthentication {}

impl Validate for PeerAuthentication {
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
pub struct RequestAuthentication {}

impl Validate for RequestAuthentication {
    fn validate(&self, _cx: &mut Checker) {}
}
