//! (being written)

use crate::validate::{Checker, Validate};
use serde::{Deserialize, Serialize};

/// Placeholder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioOperator {}

impl Validate for IstioOperator {
    fn validate(&self, _cx: &mut Checker) {}
}
