//! `LocalContainer` (stub; filled in by the container work).
