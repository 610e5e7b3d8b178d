//! Congestion controllers behind one small trait.
