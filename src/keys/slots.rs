//! Key slots: the master key wrapped under key-encryption keys derived from passphrases or key files.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Utc};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::master::{KEY_LEN, MasterKey, random_array};
use crate::secret::{Secret, wipe};

/// Argon2id cost for new passphrase slots: 64 MiB and 3 passes, about a quarter of a second on
/// one core, which makes guessing expensive while `lifeboat` stays quick to start by hand.
/// Processes that start often (`wal-push`) should use a key-file slot instead.
pub const ARGON2_MEMORY_KIB: u32 = 64 * 1024;
pub const ARGON2_ITERATIONS: u32 = 3;
pub const ARGON2_PARALLELISM: u32 = 1;
/// The most Argon2id cost a slot may ask for when it is opened: far above what lifeboat writes,
/// so only a damaged or altered `lifeboat.repo` exceeds them, and such a slot is refused rather
/// than making the unlock allocate without bound (abort) or run for hours. At the limits an
/// unlock takes about a quarter of a minute.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;
pub const MAX_ARGON2_ITERATIONS: u32 = 10;
pub const MAX_ARGON2_PARALLELISM: u32 = 16;
/// Key files shorter than this (after trailing whitespace) are refused as too weak.
pub const MIN_KEY_FILE_BYTES: usize = 32;

/// What the operator presents to open the repository.
pub enum Unlock {
    Passphrase(Secret),
    KeyFile(KeyFile),
}

impl Unlock {
    pub fn kind(&self) -> SlotKind {
        match self {
            Unlock::Passphrase(_) => SlotKind::Passphrase,
            Unlock::KeyFile(_) => SlotKind::KeyFile,
        }
    }

    /// For messages: "the passphrase" or "key file /etc/lifeboat/repo.key".
    pub fn describe(&self) -> String {
        match self {
            Unlock::Passphrase(_) => "the passphrase".into(),
            Unlock::KeyFile(file) => format!("key file {}", file.path.display()),
        }
    }
}

/// The contents of a key file, wiped from memory on drop.
pub struct KeyFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

impl KeyFile {
    /// Reads a key file. A file others can read is accepted with a warning: refusing it would
    /// stop WAL archiving, which is worse than the exposure the operator can fix with chmod.
    pub fn load(path: &Path) -> Result<KeyFile, KeyError> {
        let bad = |detail: String| KeyError::KeyFile { path: path.to_owned(), detail };
        let unreadable = |error: std::io::Error| bad(unreadable_key_file(&error));
        let metadata = std::fs::metadata(path).map_err(unreadable)?;
        if metadata.is_dir() {
            return Err(bad(
                "is a directory; repository.key_file (or LIFEBOAT_KEY_FILE) must name the key file itself".into(),
            ));
        }
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "key file is readable by group or others; run `chmod 600 {}`",
                path.display()
            );
        }
        let mut bytes = std::fs::read(path).map_err(unreadable)?;
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        if bytes.len() < MIN_KEY_FILE_BYTES {
            wipe(&mut bytes);
            return Err(bad(format!(
                "holds fewer than {MIN_KEY_FILE_BYTES} bytes, too few to be a key, so lifeboat never made a slot for \
                 it. Move it away and let lifeboat create a strong one (256 random bits, mode 0600): \
                 `lifeboat key add --new-key-file {}` with the repository opened by another key (its \
                 passphrase), or `lifeboat init` for a new repository",
                path.display()
            )));
        }
        Ok(KeyFile { path: path.to_owned(), bytes })
    }

    /// Creates a new key file with 256 random bits (as 64 hex digits), readable only by its owner.
    /// Refuses to overwrite an existing file: it may be the only key to a repository.
    pub fn generate(path: &Path) -> Result<KeyFile, KeyError> {
        let bad = |detail: String| KeyError::KeyFile { path: path.to_owned(), detail };
        let mut random: [u8; 32] = random_array();
        let mut text = hex::encode(random).into_bytes();
        wipe(&mut random);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(
            |error| match error.kind() {
                std::io::ErrorKind::AlreadyExists => bad("already exists; lifeboat never overwrites a key file".into()),
                _ => bad(format!("cannot create it: {error}")),
            },
        )?;
        let written = file.write_all(&text).and_then(|()| file.write_all(b"\n")).and_then(|()| file.sync_all());
        if let Err(error) = written {
            wipe(&mut text);
            let _ = std::fs::remove_file(path);
            return Err(bad(format!("cannot write it: {error}")));
        }
        Ok(KeyFile { path: path.to_owned(), bytes: text })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why a key file could not be read, and what to do about it.
fn unreadable_key_file(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "does not exist. It is named by repository.key_file (or LIFEBOAT_KEY_FILE); \
             put the repository's key file back there from where you keep a copy, or correct the path, or open \
             the repository with its passphrase instead (`lifeboat key list` shows its slots)"
            .to_owned(),
        std::io::ErrorKind::PermissionDenied => format!(
            "cannot be read by this user (uid {}): {error}. Run lifeboat as the user that owns the key file \
             (for wal-push, PostgreSQL's OS user), or give that user read access (`chmod 600` and `chown`)",
            current_uid()
        ),
        _ => format!("cannot be read: {error}; check that the path names the repository's key file"),
    }
}

fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotKind {
    Passphrase,
    KeyFile,
}

impl SlotKind {
    /// The option of `lifeboat key add` that adds a slot of this kind.
    pub fn add_flag(self) -> &'static str {
        match self {
            SlotKind::Passphrase => "--new-passphrase-file",
            SlotKind::KeyFile => "--new-key-file",
        }
    }
}

impl std::fmt::Display for SlotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SlotKind::Passphrase => "passphrase",
            SlotKind::KeyFile => "key-file",
        })
    }
}

/// How a slot's key-encryption key is derived from what the operator presents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", deny_unknown_fields)]
pub enum Kdf {
    #[serde(rename = "argon2id")]
    Argon2id { version: u32, memory_kib: u32, iterations: u32, parallelism: u32, salt: String },
    #[serde(rename = "hkdf-sha256")]
    HkdfSha256 { salt: String },
}

/// One way to open the repository. Stored in `lifeboat.repo`; everything in it is public except
/// the master key, which only the right passphrase or key file can unwrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySlot {
    /// Random, 8 hex digits; what `lifeboat key remove` takes.
    pub id: String,
    pub kind: SlotKind,
    /// Free text from the operator ("ops vault", "dr site").
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub kdf: Kdf,
    /// AES-256-GCM nonce, 12 bytes hex.
    pub nonce: String,
    /// The master key sealed under the key-encryption key, with its tag: 48 bytes hex.
    pub wrapped_key: String,
}

const HKDF_SLOT_INFO: &[u8] = b"lifeboat key-file slot v1";

impl KeySlot {
    /// Wraps `master` for whoever holds `unlock`.
    pub fn create(master: &MasterKey, unlock: &Unlock, label: &str, repository_id: &str) -> Result<KeySlot, KeyError> {
        let id = hex::encode(random_array::<4>());
        let salt: [u8; 16] = random_array();
        let kdf = match unlock {
            Unlock::Passphrase(_) => Kdf::Argon2id {
                version: 0x13,
                memory_kib: ARGON2_MEMORY_KIB,
                iterations: ARGON2_ITERATIONS,
                parallelism: ARGON2_PARALLELISM,
                salt: hex::encode(salt),
            },
            Unlock::KeyFile(_) => Kdf::HkdfSha256 { salt: hex::encode(salt) },
        };
        let mut kek = derive_kek(&kdf, unlock)?;
        let nonce: [u8; 12] = random_array();
        let aad = wrap_aad(repository_id, &id, master.id());
        let cipher = Aes256Gcm::new((&kek).into());
        wipe(&mut kek);
        let wrapped = cipher
            .encrypt((&nonce).into(), aes_gcm::aead::Payload { msg: master.bytes(), aad: &aad })
            .expect("AES-GCM can seal 32 bytes");
        Ok(KeySlot {
            id,
            kind: unlock.kind(),
            label: label.to_owned(),
            created_at: Utc::now(),
            kdf,
            nonce: hex::encode(nonce),
            wrapped_key: hex::encode(wrapped),
        })
    }

    /// The master key if `unlock` opens this slot; `Ok(None)` if it does not.
    pub fn try_unwrap(
        &self,
        unlock: &Unlock,
        repository_id: &str,
        key_id: [u8; 16],
    ) -> Result<Option<MasterKey>, KeyError> {
        if self.kind != unlock.kind() {
            return Ok(None);
        }
        let damaged = |detail: &str| KeyError::DamagedSlot { slot: self.id.clone(), detail: detail.to_owned() };
        let nonce: [u8; 12] = decode_hex(&self.nonce).ok_or_else(|| damaged("nonce is not 12 hex bytes"))?;
        let wrapped = hex::decode(&self.wrapped_key).map_err(|_| damaged("wrapped_key is not hex"))?;
        if let Kdf::Argon2id { memory_kib, iterations, parallelism, .. } = &self.kdf
            && (*memory_kib > MAX_ARGON2_MEMORY_KIB
                || *iterations > MAX_ARGON2_ITERATIONS
                || *parallelism > MAX_ARGON2_PARALLELISM)
        {
            return Err(damaged(&format!(
                "its Argon2 cost ({memory_kib} KiB, {iterations} passes, {parallelism} lanes) exceeds \
                 {MAX_ARGON2_MEMORY_KIB} KiB, {MAX_ARGON2_ITERATIONS} passes, {MAX_ARGON2_PARALLELISM} lanes"
            )));
        }
        let mut kek = derive_kek(&self.kdf, unlock)?;
        let cipher = Aes256Gcm::new((&kek).into());
        wipe(&mut kek);
        let aad = wrap_aad(repository_id, &self.id, key_id);
        let Ok(mut plain) = cipher.decrypt((&nonce).into(), aes_gcm::aead::Payload { msg: &wrapped, aad: &aad }) else {
            return Ok(None);
        };
        let bytes: Option<[u8; KEY_LEN]> = plain.as_slice().try_into().ok();
        wipe(&mut plain);
        let bytes = bytes.ok_or_else(|| damaged("the unwrapped key is not 32 bytes"))?;
        Ok(Some(MasterKey::from_parts(key_id, bytes)))
    }
}

/// The slot's authenticated context: a slot copied into another repository, or renamed, or
/// pointed at another master key id, does not open.
fn wrap_aad(repository_id: &str, slot_id: &str, key_id: [u8; 16]) -> Vec<u8> {
    let mut aad = b"lifeboat key slot v1\0".to_vec();
    aad.extend_from_slice(repository_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(slot_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&key_id);
    aad
}

fn derive_kek(kdf: &Kdf, unlock: &Unlock) -> Result<[u8; KEY_LEN], KeyError> {
    let mut kek = [0u8; KEY_LEN];
    match (kdf, unlock) {
        (Kdf::Argon2id { version, memory_kib, iterations, parallelism, salt }, Unlock::Passphrase(passphrase)) => {
            if *version != 0x13 {
                return Err(KeyError::Kdf(format!("Argon2 version {version:#x} is not supported (only 0x13)")));
            }
            let salt = hex::decode(salt).map_err(|_| KeyError::Kdf("Argon2 salt is not hex".into()))?;
            let params = Params::new(*memory_kib, *iterations, *parallelism, Some(KEY_LEN))
                .map_err(|error| KeyError::Kdf(format!("Argon2 parameters rejected: {error}")))?;
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password_into(passphrase.expose().as_bytes(), &salt, &mut kek)
                .map_err(|error| KeyError::Kdf(format!("Argon2 failed: {error}")))?;
        }
        (Kdf::HkdfSha256 { salt }, Unlock::KeyFile(file)) => {
            let salt = hex::decode(salt).map_err(|_| KeyError::Kdf("HKDF salt is not hex".into()))?;
            Hkdf::<Sha256>::new(Some(&salt), &file.bytes)
                .expand(HKDF_SLOT_INFO, &mut kek)
                .expect("32 bytes is a valid HKDF-SHA256 output length");
        }
        _ => return Err(KeyError::Kdf("the slot's KDF does not match its kind".into())),
    }
    Ok(kek)
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    hex::decode(text).ok()?.try_into().ok()
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {detail}", path = path.display())]
    KeyFile { path: PathBuf, detail: String },

    #[error(
        "key slot {slot} in lifeboat.repo is damaged ({detail}); use another slot or restore lifeboat.repo from a copy"
    )]
    DamagedSlot { slot: String, detail: String },

    #[error("key derivation failed: {0}")]
    Kdf(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passphrase(text: &str) -> Unlock {
        Unlock::Passphrase(Secret::new(text))
    }

    #[test]
    fn passphrase_slot_opens_only_with_its_passphrase() {
        let master = MasterKey::generate();
        let slot = KeySlot::create(&master, &passphrase("correct horse"), "ops", "repo-1").unwrap();
        let opened = slot.try_unwrap(&passphrase("correct horse"), "repo-1", master.id()).unwrap().unwrap();
        assert_eq!(opened.bytes(), master.bytes());
        assert!(slot.try_unwrap(&passphrase("wrong horse"), "repo-1", master.id()).unwrap().is_none());
        // The same slot pasted into another repository does not open.
        assert!(slot.try_unwrap(&passphrase("correct horse"), "repo-2", master.id()).unwrap().is_none());
    }

    #[test]
    fn key_file_slot_round_trips_and_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo.key");
        let file = KeyFile::generate(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(KeyFile::generate(&path).is_err(), "an existing key file must never be overwritten");
        let master = MasterKey::generate();
        let slot = KeySlot::create(&master, &Unlock::KeyFile(file), "archiver", "r").unwrap();
        let reloaded = Unlock::KeyFile(KeyFile::load(&path).unwrap());
        assert_eq!(slot.try_unwrap(&reloaded, "r", master.id()).unwrap().unwrap().bytes(), master.bytes());
        assert!(slot.try_unwrap(&passphrase("x"), "r", master.id()).unwrap().is_none());
    }

    #[test]
    fn short_key_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weak.key");
        std::fs::write(&path, "short\n").unwrap();
        let error = KeyFile::load(&path).err().unwrap().to_string();
        assert!(error.contains("weak.key") && error.contains("fewer than 32"), "{error}");
    }
}
