//! The catalog: the repository's layout for each cluster, typed names, and leases.

pub mod id;
pub mod lease;
