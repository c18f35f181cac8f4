//! The pure backup plan.
