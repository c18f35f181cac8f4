//! The backup life cycle.

pub mod plan;
