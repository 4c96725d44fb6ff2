//! The repository master key and the per-object keys derived from it.

use hkdf::Hkdf;
use sha2::Sha256;

use crate::secret::wipe;

/// Length of the AES-256 key and of the master key.
pub const KEY_LEN: usize = 32;
/// STREAM nonce prefix for a 96-bit GCM nonce: 7 bytes, then a 4-byte counter and a 1-byte flag.
pub const NONCE_PREFIX_LEN: usize = 7;

/// The random 256-bit key every object key is derived from. It never leaves memory unwrapped
/// except through a key slot; the bytes are wiped when it is dropped.
pub struct MasterKey {
    id: [u8; 16],
    bytes: [u8; KEY_LEN],
}

/// The key and nonce prefix one object is sealed with.
pub struct ObjectKeyMaterial {
    pub key: [u8; KEY_LEN],
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl Drop for ObjectKeyMaterial {
    fn drop(&mut self) {
        wipe(&mut self.key);
    }
}

const OBJECT_INFO: &[u8] = b"lifeboat object key v1\0";

impl MasterKey {
    pub fn generate() -> MasterKey {
        MasterKey { id: random_array(), bytes: random_array() }
    }

    pub(crate) fn from_parts(id: [u8; 16], bytes: [u8; KEY_LEN]) -> MasterKey {
        MasterKey { id, bytes }
    }

    /// Random, public identifier of this key; stored in every object header so a reader can tell
    /// "wrong repository" from "damaged object".
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// HKDF-SHA256(ikm = master key, salt = the object's salt,
    /// info = "lifeboat object key v1\0" || object name) → 32-byte key || 7-byte nonce prefix.
    /// Binding the name means an object's bytes do not authenticate under any other name.
    pub fn derive_object_key(&self, salt: &[u8; 32], object_name: &str) -> ObjectKeyMaterial {
        let hkdf = Hkdf::<Sha256>::new(Some(salt), &self.bytes);
        let mut okm = [0u8; KEY_LEN + NONCE_PREFIX_LEN];
        hkdf.expand_multi_info(&[OBJECT_INFO, object_name.as_bytes()], &mut okm)
            .expect("39 bytes is a valid HKDF-SHA256 output length");
        let material = ObjectKeyMaterial {
            key: okm[..KEY_LEN].try_into().expect("32 bytes"),
            nonce_prefix: okm[KEY_LEN..].try_into().expect("7 bytes"),
        };
        wipe(&mut okm);
        material
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey {{ id: {}, bytes: <redacted> }}", hex::encode(self.id))
    }
}

/// Bytes from the operating system's CSPRNG. Failing to get randomness is not recoverable: every
/// key and salt depends on it.
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random number generator failed");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_differ_by_salt_and_name() {
        let master = MasterKey::generate();
        let a = master.derive_object_key(&[1; 32], "clusters/main/a");
        let b = master.derive_object_key(&[1; 32], "clusters/main/b");
        let c = master.derive_object_key(&[2; 32], "clusters/main/a");
        let a2 = master.derive_object_key(&[1; 32], "clusters/main/a");
        assert_ne!(a.key, b.key);
        assert_ne!(a.key, c.key);
        assert_eq!(a.key, a2.key);
        assert_eq!(a.nonce_prefix, a2.nonce_prefix);
    }

    #[test]
    fn debug_does_not_show_key_bytes() {
        let master = MasterKey::from_parts([0xab; 16], [0xcd; 32]);
        let shown = format!("{master:?}");
        assert!(!shown.contains("cdcd"), "{shown}");
        assert!(shown.contains("abab"));
    }
}
