//! The backup life cycle, run through a [`Container`](crate::Container): the I/O layer
//! over the pure [`plan`], [`layout`] and [`manifest`] modules.

pub mod layout;
pub mod manifest;
pub mod plan;
