//! (being written)

use crate::validate::{Checker, Validate};
use serde::{Deserialize, Serialize};

/// Placeholder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {}

impl Validate for Telemetry {
    fn validate(&self, _cx: &mut Checker) {}
}
