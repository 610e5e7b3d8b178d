//! The client driver (being written).
