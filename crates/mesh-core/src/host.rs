//! Hosts (being written).
