//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

pub mod crashfs;
pub mod differential;
pub mod executor;
pub mod kill;
pub mod model;
pub mod mvcc_model;
pub mod requests;
