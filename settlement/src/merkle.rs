//! Fills' Merkle root (to be written).
