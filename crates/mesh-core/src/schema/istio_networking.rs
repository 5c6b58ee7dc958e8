//! (being written)

use crate::validate::{Checker, Validate};
use serde::{Deserialize, Serialize};

/// Placeholder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualService {}

impl Validate for VirtualService {
    fn validate(&self, _cx: &mut Checker) {}
}

/// Placeholder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRule {}

impl Validate for DestinationRule {
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
pub struct ServiceEntry {}

impl Validate for ServiceEntry {
    fn validate(&self, _cx: &mut Checker) {}
}

/// Placeholder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntry {}

impl Validate for WorkloadEntry {
    fn validate(&self, _cx: &mut Checker) {}
}
