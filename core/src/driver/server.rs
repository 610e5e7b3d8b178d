//! The server driver (being written).
