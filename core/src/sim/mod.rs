//! A seeded, deterministic network simulator in simulated time.
