//! Repository keys: the random master key and the key slots in `lifeboat.repo` that wrap it.
//!
//! A slot wraps the master key under a key-encryption key derived from a passphrase (Argon2id,
//! deliberately slow) or from a key file (HKDF, fast enough for `wal-push` once per segment).
//! Adding or removing a slot rewrites only `lifeboat.repo`; no data object changes.

pub mod master;
pub mod slots;

pub use master::MasterKey;
pub use slots::{KeyError, KeySlot, SlotKind, Unlock};
