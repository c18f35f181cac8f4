//! The Container conformance suite (stub; filled in by the container work).
