//! A repository: an object store, its `lifeboat.repo` description, and the unwrapped master key.
//!
//! This is where sealed objects are written and read: callers hand plaintext and get back
//! authenticated plaintext, and never see the object format or the keys. `lifeboat.repo` itself is
//! plaintext JSON (it must be readable before any key is known); it holds the format version, the
//! cipher and the key slots. A second copy, `lifeboat.repo.copy`, is written after every change and
//! read only if the first is unreadable, because losing that one object would lose every backup.
//!
//! When the configured key opens no slot, the repository is asked why before the key is blamed:
//! `lifeboat.repo` may be another repository's, put in place of this one's. Its copy, and the key
//! id in the header of a sealed object that should exist, say so without any key.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::keys::master::random_array;
use crate::keys::{KeyError, KeySlot, MasterKey, SlotKind, Unlock};
use crate::object::{
    Cipher, HEADER_LEN, Header, ObjectError, Plaintext, SealSummary, WriteOptions, open_reader, seal_reader,
};
use crate::storage::{ByteReader, ObjectKey, ObjectStore, PutMode, StorageError};

pub const REPO_FILE: &str = "lifeboat.repo";
pub const REPO_FILE_COPY: &str = "lifeboat.repo.copy";
const FORMAT_NAME: &str = "lifeboat-repository";
const FORMAT_VERSION: u32 = 1;

/// The contents of `lifeboat.repo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoFile {
    /// Always "lifeboat-repository": tells a human (or `file`) what this is.
    pub format: String,
    pub version: u32,
    /// Random, 32 hex digits; bound into every key slot so slots cannot be moved between repositories.
    pub repository_id: String,
    pub created_at: DateTime<Utc>,
    pub cipher: Cipher,
    /// Identifies the master key (32 hex digits); absent without encryption.
    pub key_id: Option<String>,
    pub slots: Vec<KeySlot>,
}

pub struct Repository {
    store: Arc<dyn ObjectStore>,
    file: RepoFile,
    master: Option<Arc<MasterKey>>,
    /// The id of the slot that unwrapped `master`; `None` without encryption.
    opened_by: Option<String>,
    write_options: WriteOptions,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.store.location())
            .field("repository_id", &self.file.repository_id)
            .field("cipher", &self.file.cipher)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error("no repository at {location} (it has no lifeboat.repo); create one with `lifeboat init`")]
    NotInitialised { location: String },

    #[error("{location} already holds a repository (lifeboat.repo exists); nothing was changed")]
    AlreadyInitialised { location: String },

    #[error(
        "{location} is not empty ({example} and maybe more) but holds no lifeboat.repo; \
         initialise a repository in an empty location"
    )]
    NotEmpty { location: String, example: String },

    #[error("{location}: lifeboat.repo is unreadable ({detail}) and so is lifeboat.repo.copy")]
    BadRepoFile { location: String, detail: String },

    #[error(
        "{location}: {name} has format version {found}, and this lifeboat ({release}) reads version \
         {supported} only: it was written by another lifeboat release. Run a lifeboat that reads version \
         {found} (`lifeboat --version` shows this one's release); nothing was changed"
    )]
    UnsupportedVersion { location: String, name: &'static str, found: u64, supported: u32, release: &'static str },

    #[error(
        "{location} is encrypted and no key is configured; set repository.passphrase_file, \
         LIFEBOAT_PASSPHRASE, LIFEBOAT_PASSPHRASE_FILE or repository.key_file"
    )]
    KeyRequired { location: String },

    #[error(
        "{unlock} opens none of the {tried} {kind} slot(s) of repository {repository_id} at {location}: \
         the key is wrong, or its slot was removed; check the configured key (`lifeboat key list` \
         shows the slots, `lifeboat key check` tries the key)"
    )]
    NoMatchingSlot { location: String, repository_id: String, unlock: String, kind: SlotKind, tried: usize },

    #[error("{0}")]
    ForeignRepoFile(Box<ForeignRepoFile>),

    #[error(
        "{location} has no {kind} slot, so {unlock} cannot open it; open it with another key and \
         add one with `lifeboat key add {flag} <PATH>`",
        flag = kind.add_flag()
    )]
    NoSlotOfKind { location: String, unlock: String, kind: SlotKind },

    #[error(
        "{location}: lifeboat.repo changed while this command ran (it now names another repository or master key); \
         nothing was changed. Find out what rewrote it, then run the command again"
    )]
    ChangedUnderneath { location: String },

    #[error("{location}: no key slot {slot}; `lifeboat key list` shows the slots")]
    NoSuchSlot { location: String, slot: String },

    #[error("{location}: slot {slot} is the last key slot; removing it would lock everyone out. Add another first")]
    LastSlot { location: String, slot: String },

    #[error("{location} is not encrypted (cipher none), so it has no keys to manage")]
    NotEncrypted { location: String },

    #[error("cipher = \"aes-256-gcm\" needs a key to create the repository with; configure a passphrase or key file")]
    InitNeedsKey,

    #[error(transparent)]
    Key(#[from] KeyError),

    #[error(transparent)]
    Storage(#[from] StorageError),

    #[error(transparent)]
    Object(#[from] ObjectError),

    #[error("{location}: reading object {key} failed: {source}")]
    Read {
        location: String,
        key: ObjectKey,
        #[source]
        source: std::io::Error,
    },
}

/// What shows that `lifeboat.repo` is not this repository's (see [`RepositoryError::ForeignRepoFile`]).
#[derive(Debug)]
pub struct ForeignRepoFile {
    pub location: String,
    pub repository_id: String,
    /// "key id <hex>", or "unencrypted".
    pub key: String,
    /// "lifeboat.repo.copy belongs to repository ... and clusters/main/cluster was sealed with key id ...".
    pub evidence: String,
    /// What that means: which of the two files is the foreign one, as far as can be told.
    pub verdict: String,
    /// The operator's next step.
    pub next: String,
}

impl std::fmt::Display for ForeignRepoFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lifeboat.repo at {} belongs to repository {} ({}), but {}: {}. {}",
            self.location, self.repository_id, self.key, self.evidence, self.verdict, self.next
        )
    }
}

impl Repository {
    /// Creates a repository in an empty location: a new random master key wrapped in one slot
    /// for `unlock` (required unless `cipher` is none), and `lifeboat.repo`.
    pub async fn init(
        store: Arc<dyn ObjectStore>,
        cipher: Cipher,
        unlock: Option<&Unlock>,
        slot_label: &str,
        write_options: WriteOptions,
    ) -> Result<Repository, RepositoryError> {
        let master = match cipher {
            Cipher::None => None,
            Cipher::Aes256Gcm => Some(Arc::new(MasterKey::generate())),
        };
        Repository::create(store, cipher, master, unlock, slot_label, write_options).await
    }

    /// Creates a copy of `primary` in an empty location: the same cipher and master key (so
    /// objects copied as stored open there), wrapped in one new slot for `unlock`, under a new
    /// repository id (each repository keeps its own journal, and a host remembers journals by id).
    pub async fn init_copy(
        store: Arc<dyn ObjectStore>,
        primary: &Repository,
        unlock: Option<&Unlock>,
        slot_label: &str,
        write_options: WriteOptions,
    ) -> Result<Repository, RepositoryError> {
        Repository::create(store, primary.file.cipher, primary.master.clone(), unlock, slot_label, write_options).await
    }

    /// Writes `lifeboat.repo` for a new repository id in an empty location, with `master` (`None`
    /// exactly for cipher none) wrapped in one slot for `unlock`.
    async fn create(
        store: Arc<dyn ObjectStore>,
        cipher: Cipher,
        master: Option<Arc<MasterKey>>,
        unlock: Option<&Unlock>,
        slot_label: &str,
        write_options: WriteOptions,
    ) -> Result<Repository, RepositoryError> {
        ensure_empty(store.as_ref()).await?;
        let repository_id = hex::encode(random_array::<16>());
        let slots = match &master {
            None => Vec::new(),
            Some(master) => {
                let unlock = unlock.ok_or(RepositoryError::InitNeedsKey)?;
                vec![KeySlot::create(master, unlock, slot_label, &repository_id)?]
            }
        };
        let file = RepoFile {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            repository_id,
            created_at: Utc::now(),
            cipher,
            key_id: master.as_ref().map(|master| hex::encode(master.id())),
            slots,
        };
        let opened_by = file.slots.first().map(|slot| slot.id.clone());
        let repository = Repository { store, file, master, opened_by, write_options };
        repository.write_repo_file(PutMode::CreateOnly).await?;
        Ok(repository)
    }

    /// Opens an existing repository, unwrapping the master key with `unlock`.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        unlock: Option<&Unlock>,
        write_options: WriteOptions,
    ) -> Result<Repository, RepositoryError> {
        Repository::open_probing(store, unlock, write_options, &[]).await
    }

    /// As [`Repository::open`]; when `unlock` opens no slot, `probes` (sealed objects that should
    /// exist, such as a cluster's identity record) and `lifeboat.repo.copy` are read to tell a
    /// wrong key from another repository's `lifeboat.repo` put in place of this one's.
    pub async fn open_probing(
        store: Arc<dyn ObjectStore>,
        unlock: Option<&Unlock>,
        write_options: WriteOptions,
        probes: &[ObjectKey],
    ) -> Result<Repository, RepositoryError> {
        let file = read_repo_file(store.as_ref()).await?;
        let location = store.location();
        let (master, opened_by) = match file.cipher {
            Cipher::None => (None, None),
            Cipher::Aes256Gcm => {
                let unlock = unlock.ok_or_else(|| RepositoryError::KeyRequired { location: location.clone() })?;
                match unlock_master(&file, unlock, &location) {
                    Ok((master, slot)) => (Some(Arc::new(master)), Some(slot)),
                    Err(error @ (RepositoryError::NoMatchingSlot { .. } | RepositoryError::NoSlotOfKind { .. })) => {
                        let sealed = first_sealed(store.as_ref(), probes).await;
                        let foreign = foreign_repo_file(store.as_ref(), &file, Some(unlock), sealed).await;
                        return Err(foreign.unwrap_or(error));
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        Ok(Repository { store, file, master, opened_by, write_options })
    }

    /// The slot that opened the repository; `None` when it is not encrypted.
    pub fn opened_slot(&self) -> Option<&KeySlot> {
        let id = self.opened_by.as_deref()?;
        self.file.slots.iter().find(|slot| slot.id == id)
    }

    /// Checks that the objects were sealed with this repository's master key, by the first of
    /// `probes` that exists: its header names the key, and reading it whole authenticates it.
    /// `unlock` (the key that opened the repository) only shapes the advice if they were not.
    /// The probe read; `None` when none exists (nothing was stored yet).
    pub async fn check_objects_key(
        &self,
        probes: &[ObjectKey],
        unlock: Option<&Unlock>,
    ) -> Result<Option<ObjectKey>, RepositoryError> {
        let Some(sealed) = first_sealed(self.store.as_ref(), probes).await else {
            return Ok(None);
        };
        let probe = sealed.0.clone();
        // Only an object sealed under another master key makes this `Some`.
        if let Some(foreign) = foreign_repo_file(self.store.as_ref(), &self.file, unlock, Some(sealed)).await {
            return Err(foreign);
        }
        self.get_bytes(&probe).await?;
        Ok(Some(probe))
    }

    pub fn location(&self) -> String {
        self.store.location()
    }

    /// The same repository, writing new objects with `write_options` (wal-push: its own level).
    pub fn with_write_options(&self, write_options: WriteOptions) -> Repository {
        Repository {
            store: self.store.clone(),
            file: self.file.clone(),
            master: self.master.clone(),
            opened_by: self.opened_by.clone(),
            write_options,
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn file(&self) -> &RepoFile {
        &self.file
    }

    /// Seals `plaintext` and stores it under `key`. Returns once the object is durable.
    pub async fn put(
        &self,
        key: &ObjectKey,
        plaintext: ByteReader,
        mode: PutMode,
    ) -> Result<SealSummary, RepositoryError> {
        self.put_from(key, Plaintext::Async(plaintext), mode).await
    }

    /// [`Repository::put`] of a local file, read by the sealing thread itself.
    pub async fn put_file(
        &self,
        key: &ObjectKey,
        file: std::fs::File,
        mode: PutMode,
    ) -> Result<SealSummary, RepositoryError> {
        self.put_from(key, Plaintext::Blocking(Box::new(file)), mode).await
    }

    async fn put_from(
        &self,
        key: &ObjectKey,
        plaintext: Plaintext,
        mode: PutMode,
    ) -> Result<SealSummary, RepositoryError> {
        assert!(!is_repo_file(key), "lifeboat.repo is written only by the key-management code");
        let (sealed, sealing) = seal_reader(key, self.master.as_deref(), &self.write_options, plaintext);
        let stored = self.store.put(key, sealed, mode).await;
        let sealed = sealing.await.expect("the sealing task does not panic");
        stored?;
        sealed.map_err(|source| RepositoryError::Read { location: self.location(), key: key.clone(), source })
    }

    pub async fn put_bytes(
        &self,
        key: &ObjectKey,
        plaintext: Vec<u8>,
        mode: PutMode,
    ) -> Result<SealSummary, RepositoryError> {
        self.put(key, Box::new(std::io::Cursor::new(plaintext)), mode).await
    }

    /// Streams the authenticated plaintext of the object under `key`. Reads from the returned
    /// reader fail with an `InvalidData` error carrying an [`ObjectError`] if the object was altered.
    pub async fn get(&self, key: &ObjectKey) -> Result<ByteReader, RepositoryError> {
        let stored = self.store.get(key).await?;
        Ok(open_reader(key, self.master.clone(), stored))
    }

    /// The whole authenticated plaintext of a (small) object.
    pub async fn get_bytes(&self, key: &ObjectKey) -> Result<Vec<u8>, RepositoryError> {
        let mut reader = self.get(key).await?;
        let mut out = Vec::new();
        match reader.read_to_end(&mut out).await {
            Ok(_) => Ok(out),
            Err(error) => Err(match ObjectError::from_io(&error) {
                Some(object_error) => RepositoryError::Object(object_error.clone()),
                None => RepositoryError::Read { location: self.location(), key: key.clone(), source: error },
            }),
        }
    }

    /// Adds a slot that `unlock` opens. The repository must be open (with any existing key).
    /// A handle for changing key slots: `lifeboat.repo` read afresh (so a slot another process
    /// added or removed since this one opened is not undone) with the master key this handle
    /// already unwrapped, so the key is not derived twice (Argon2 takes a second on purpose).
    pub async fn for_slot_change(&self) -> Result<Repository, RepositoryError> {
        let file = read_repo_file(self.store.as_ref()).await?;
        if file.repository_id != self.file.repository_id || file.key_id != self.file.key_id {
            return Err(RepositoryError::ChangedUnderneath { location: self.location() });
        }
        Ok(Repository {
            store: self.store.clone(),
            file,
            master: self.master.clone(),
            opened_by: self.opened_by.clone(),
            write_options: self.write_options,
        })
    }

    pub async fn add_slot(&mut self, unlock: &Unlock, label: &str) -> Result<KeySlot, RepositoryError> {
        let master = self.master.clone().ok_or_else(|| RepositoryError::NotEncrypted { location: self.location() })?;
        let slot = KeySlot::create(&master, unlock, label, &self.file.repository_id)?;
        self.file.slots.push(slot.clone());
        self.write_repo_file(PutMode::Overwrite).await?;
        Ok(slot)
    }

    /// Removes a slot; the key it wrapped no longer opens the repository. Data is not rewritten:
    /// the master key stays the same, so anyone who saved it unwrapped keeps access (rotate the
    /// master key by creating a new repository if that is the threat).
    pub async fn remove_slot(&mut self, slot_id: &str) -> Result<KeySlot, RepositoryError> {
        let location = self.location();
        if self.master.is_none() {
            return Err(RepositoryError::NotEncrypted { location });
        }
        let index = self
            .file
            .slots
            .iter()
            .position(|slot| slot.id == slot_id)
            .ok_or_else(|| RepositoryError::NoSuchSlot { location: location.clone(), slot: slot_id.to_owned() })?;
        if self.file.slots.len() == 1 {
            return Err(RepositoryError::LastSlot { location, slot: slot_id.to_owned() });
        }
        let removed = self.file.slots.remove(index);
        self.write_repo_file(PutMode::Overwrite).await?;
        Ok(removed)
    }

    async fn write_repo_file(&self, mode: PutMode) -> Result<(), RepositoryError> {
        let mut json = serde_json::to_vec_pretty(&self.file).expect("the repository description serialises");
        json.push(b'\n');
        for (name, mode) in [(REPO_FILE, mode), (REPO_FILE_COPY, PutMode::Overwrite)] {
            let key = ObjectKey::new(name).expect("a valid key");
            let stored = self.store.put(&key, Box::new(std::io::Cursor::new(json.clone())), mode).await;
            match stored {
                Err(StorageError::AlreadyExists { location, .. }) => {
                    return Err(RepositoryError::AlreadyInitialised { location });
                }
                other => other?,
            }
        }
        Ok(())
    }
}

/// A repository is created only where nothing is stored yet.
async fn ensure_empty(store: &dyn ObjectStore) -> Result<(), RepositoryError> {
    let location = store.location();
    match store.list("").await?.into_iter().next() {
        None => Ok(()),
        Some(existing) if is_repo_file(&existing.key) => Err(RepositoryError::AlreadyInitialised { location }),
        Some(existing) => Err(RepositoryError::NotEmpty { location, example: existing.key.to_string() }),
    }
}

fn is_repo_file(key: &ObjectKey) -> bool {
    key.as_str() == REPO_FILE || key.as_str() == REPO_FILE_COPY
}

impl Repository {
    /// Whether `lifeboat.repo` and `lifeboat.repo.copy` both hold what this repository was opened
    /// with: each one that does not is named with what is wrong and how to put it right. Losing
    /// the copy goes unnoticed otherwise, until the day the first one is lost too.
    pub async fn check_repo_files(&self) -> Result<Vec<(String, String)>, StorageError> {
        let mut problems = Vec::new();
        for (name, other) in [(REPO_FILE, REPO_FILE_COPY), (REPO_FILE_COPY, REPO_FILE)] {
            let key = ObjectKey::new(name).expect("a valid key");
            let found = match read_plain(self.store.as_ref(), &key).await {
                Ok(bytes) => serde_json::from_slice::<RepoFile>(&bytes).ok(),
                Err(StorageError::NotFound { .. }) => {
                    problems.push((name.to_owned(), format!("is missing; put it back from {other} (copy the file)")));
                    continue;
                }
                Err(error) => return Err(error),
            };
            if found.as_ref() != Some(&self.file) {
                problems.push((
                    name.to_owned(),
                    format!(
                        "does not hold the repository description lifeboat opened (repository {}); it was altered or \
                         replaced: put it back from {other} if that one is right (`lifeboat key check` tells)",
                        self.file.repository_id
                    ),
                ));
            }
        }
        Ok(problems)
    }
}

impl RepoFile {
    /// Reads `lifeboat.repo` (no key needed), falling back to its copy if the first is missing or damaged.
    pub async fn read(store: &dyn ObjectStore) -> Result<RepoFile, RepositoryError> {
        read_repo_file(store).await
    }
}

async fn read_repo_file(store: &dyn ObjectStore) -> Result<RepoFile, RepositoryError> {
    let location = store.location();
    let mut first_problem = None;
    for name in [REPO_FILE, REPO_FILE_COPY] {
        let key = ObjectKey::new(name).expect("a valid key");
        let bytes = match read_plain(store, &key).await {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { .. }) => {
                first_problem.get_or_insert_with(|| "missing".to_owned());
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        // The version first: another version's fields are not this one's, and "missing field"
        // would hide that the file is simply newer (or older) than this lifeboat.
        if let Some(found) = other_version(&bytes) {
            return Err(RepositoryError::UnsupportedVersion {
                location,
                name,
                found,
                supported: FORMAT_VERSION,
                release: env!("CARGO_PKG_VERSION"),
            });
        }
        match serde_json::from_slice::<RepoFile>(&bytes) {
            Ok(file) if file.format != FORMAT_NAME => {
                first_problem.get_or_insert_with(|| format!("format is {:?}, not {FORMAT_NAME:?}", file.format));
            }
            Ok(file) => {
                if let Some(problem) = first_problem {
                    tracing::warn!(%location, "lifeboat.repo is {problem}; using lifeboat.repo.copy. Run `lifeboat key list` to check, and repair lifeboat.repo from the copy");
                }
                return Ok(file);
            }
            Err(error) => {
                first_problem.get_or_insert_with(|| format!("invalid JSON: {error}"));
            }
        }
    }
    match first_problem.as_deref() {
        Some("missing") => Err(RepositoryError::NotInitialised { location }),
        other => Err(RepositoryError::BadRepoFile { location, detail: other.unwrap_or("unknown").to_owned() }),
    }
}

/// The `version` of a `lifeboat.repo` that says it is one (by its `format`) of another version
/// than this lifeboat's; `None` otherwise (this version, or not readable as one at all).
fn other_version(bytes: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Versioned {
        format: String,
        version: u64,
    }
    let versioned: Versioned = serde_json::from_slice(bytes).ok()?;
    (versioned.format == FORMAT_NAME && versioned.version != u64::from(FORMAT_VERSION)).then_some(versioned.version)
}

/// Evidence that `file` (read as `lifeboat.repo`) is another repository's: `lifeboat.repo.copy`
/// of another repository, or a stored object (`sealed`: its key and the key id in its header)
/// sealed under another master key. With `unlock`, whether it opens the copy decides the advice.
/// `None` when nothing contradicts `file`, or the object agrees with it (then the key, or the
/// copy, is what is wrong), or the evidence cannot be read: the caller's own error then stands.
async fn foreign_repo_file(
    store: &dyn ObjectStore,
    file: &RepoFile,
    unlock: Option<&Unlock>,
    sealed: Option<(ObjectKey, [u8; 16])>,
) -> Option<RepositoryError> {
    let location = store.location();
    let file_key = file_key_id(file);
    if sealed.as_ref().is_some_and(|(_, key_id)| *key_id == file_key) {
        return None;
    }
    let object = sealed;
    let copy = read_copy(store).await.filter(|copy| copy.repository_id != file.repository_id);
    if copy.is_none() && object.is_none() {
        return None;
    }
    let mut evidence = Vec::new();
    if let Some(copy) = &copy {
        evidence.push(format!(
            "lifeboat.repo.copy belongs to repository {} ({})",
            copy.repository_id,
            describe_key(file_key_id(copy))
        ));
    }
    if let Some((key, key_id)) = &object {
        let sealed = if *key_id == [0; 16] {
            "is not encrypted".to_owned()
        } else {
            format!("was sealed with key id {}", hex::encode(key_id))
        };
        evidence.push(format!("{key}, stored in it, {sealed}"));
    }
    let opens_copy = match (&copy, unlock) {
        (Some(copy), Some(unlock)) => unlock_master(copy, unlock, &location).ok().map(|(_, slot)| slot),
        _ => None,
    };
    let copy_matches_objects = match (&copy, &object) {
        (Some(copy), Some((_, key_id))) => file_key_id(copy) == *key_id,
        _ => false,
    };
    let conclusive = object.is_some() || opens_copy.is_some();
    let verdict = if conclusive {
        "it is another repository's lifeboat.repo, put in place of this one's"
    } else {
        "the two disagree on the repository id, so one of them is another repository's"
    };
    // Both files are plain JSON, so putting the copy back is a plain copy; on a local directory
    // the command can be given exactly.
    let how = match location.strip_prefix("file://") {
        Some(root) => format!(" (`cp {root}/{REPO_FILE_COPY} {root}/{REPO_FILE}`)"),
        None => String::new(),
    };
    let next = if let Some(slot) = opens_copy {
        format!(
            "The configured key opens lifeboat.repo.copy (slot {slot}): copy lifeboat.repo.copy over \
             lifeboat.repo{how}, then run `lifeboat key check`."
        )
    } else if copy_matches_objects {
        format!(
            "lifeboat.repo.copy matches the stored objects: copy it over lifeboat.repo{how}, then run \
             `lifeboat key check` to try the configured key."
        )
    } else if let Some((_, key_id)) = &object {
        format!(
            "Put back this repository's own lifeboat.repo (the one with {}) from wherever a copy of it is kept: \
             no key opens the stored objects without it. Then run `lifeboat key check`.",
            describe_key(*key_id)
        )
    } else {
        "Compare both with your records of this repository's id (`lifeboat repo info` shows the one in use), \
         put back this repository's own lifeboat.repo, then run `lifeboat key check`."
            .to_owned()
    };
    Some(RepositoryError::ForeignRepoFile(Box::new(ForeignRepoFile {
        location,
        repository_id: file.repository_id.clone(),
        key: describe_key(file_key),
        evidence: evidence.join(", and "),
        verdict: verdict.to_owned(),
        next,
    })))
}

/// `lifeboat.repo.copy`, if it is readable as a repository description of this version.
async fn read_copy(store: &dyn ObjectStore) -> Option<RepoFile> {
    let key = ObjectKey::new(REPO_FILE_COPY).expect("a valid key");
    let bytes = read_plain(store, &key).await.ok()?;
    serde_json::from_slice::<RepoFile>(&bytes).ok().filter(|copy| copy.format == FORMAT_NAME)
}

/// The key id objects sealed under `file` carry in their header: zeros without encryption (and
/// for an unreadable `key_id`, which no header carries either).
fn file_key_id(file: &RepoFile) -> [u8; 16] {
    match file.cipher {
        Cipher::None => [0; 16],
        Cipher::Aes256Gcm => file
            .key_id
            .as_deref()
            .and_then(|hex_id| hex::decode(hex_id).ok())
            .and_then(|bytes| bytes.try_into().ok())
            .unwrap_or([0; 16]),
    }
}

fn describe_key(key_id: [u8; 16]) -> String {
    if key_id == [0; 16] { "unencrypted".to_owned() } else { format!("key id {}", hex::encode(key_id)) }
}

/// The first of `probes` that exists and has a readable header, with the key id in that header.
/// Only the header is fetched: no key is needed to read it.
async fn first_sealed(store: &dyn ObjectStore, probes: &[ObjectKey]) -> Option<(ObjectKey, [u8; 16])> {
    for key in probes {
        let Ok(mut reader) = store.get_range(key, 0..HEADER_LEN as u64).await else {
            continue;
        };
        let mut bytes = Vec::with_capacity(HEADER_LEN);
        if reader.read_to_end(&mut bytes).await.is_err() {
            continue;
        }
        if let Ok(header) = Header::decode(key, &bytes) {
            return Some((key.clone(), header.key_id));
        }
    }
    None
}

async fn read_plain(store: &dyn ObjectStore, key: &ObjectKey) -> Result<Vec<u8>, StorageError> {
    let mut reader = store.get(key).await?;
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).await.map_err(|source| StorageError::Io {
        location: store.location(),
        operation: "get",
        key: key.to_string(),
        source,
    })?;
    Ok(bytes)
}

/// The master key and the id of the slot that opened it.
fn unlock_master(file: &RepoFile, unlock: &Unlock, location: &str) -> Result<(MasterKey, String), RepositoryError> {
    let key_id_hex = file.key_id.as_deref().unwrap_or_default();
    let key_id: [u8; 16] = hex::decode(key_id_hex).ok().and_then(|bytes| bytes.try_into().ok()).ok_or_else(|| {
        RepositoryError::BadRepoFile {
            location: location.to_owned(),
            detail: format!("key_id {key_id_hex:?} is not 16 hex bytes"),
        }
    })?;
    let candidates: Vec<&KeySlot> = file.slots.iter().filter(|slot| slot.kind == unlock.kind()).collect();
    if candidates.is_empty() {
        return Err(RepositoryError::NoSlotOfKind {
            location: location.to_owned(),
            unlock: unlock.describe(),
            kind: unlock.kind(),
        });
    }
    for slot in &candidates {
        if let Some(master) = slot.try_unwrap(unlock, &file.repository_id, key_id)? {
            tracing::debug!(slot = %slot.id, "repository key unwrapped");
            return Ok((master, slot.id.clone()));
        }
    }
    Err(RepositoryError::NoMatchingSlot {
        location: location.to_owned(),
        repository_id: file.repository_id.clone(),
        unlock: unlock.describe(),
        kind: unlock.kind(),
        tried: candidates.len(),
    })
}
