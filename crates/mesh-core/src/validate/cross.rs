//! Checks across resources (being written).
