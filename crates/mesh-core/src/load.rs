//! Loading (being written).
