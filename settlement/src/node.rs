//! The Lightning node (to be written).
