//! Reload (being written).
