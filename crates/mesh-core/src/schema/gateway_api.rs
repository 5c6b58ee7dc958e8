//! (being written)

use crate::validate::{Checker, Validate};
use serde::{Deserialize, Serialize};

/// Placeholder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {}

impl Validate for HttpRoute {
    fn validate(&self, _cx: &mut Checker) {}
}

/// Placeholder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRoute {}

impl Validate for GrpcRoute {
    fn validate(&self, _cx: &mut Checker) {}
}

/// Placeholder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {}

impl Validate for Gateway {
    fn validate(&self, _cx: &mut Checker) {}
}

/// Placeholder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrant {}

impl Validate for ReferenceGrant {
    fn validate(&self, _cx: &mut Checker) {}
}
