//! Netting (to be written).
