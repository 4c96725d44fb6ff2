//! What a base backup stored, read back through the repository.

use std::collections::BTreeMap;

use lifeboat::backup::blockmap::{self, BlockMapReader};
use lifeboat::format::backup_manifest::{BackupManifest, EntryKind};
use lifeboat::repository::Repository;

use super::archiving::layout;

/// Reads every object of the backup back through the repository (authenticated, decrypted): the
/// backup's directory holds exactly the manifest and its objects, each object's plaintext hashes
/// to its manifest entry, each file's bytes, put together from its pieces (offset and length in
/// their objects), hash to the file's entry, every object byte belongs to a file, and the block
/// map gives each mapped file of a full backup the values of all its blocks, which merge into its
/// hash. Returns the files' plaintexts by path.
pub async fn verify_stored_bytes(repository: &Repository, manifest: &BackupManifest) -> BTreeMap<String, Vec<u8>> {
    let layout = layout();
    let directory = layout.backup_dir(manifest.id);
    let mut listed: Vec<String> = repository
        .store()
        .list(&directory)
        .await
        .unwrap()
        .into_iter()
        .map(|meta| meta.key.as_str().strip_prefix(&directory).unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = manifest
        .objects
        .iter()
        .chain(&manifest.block_map)
        .map(|object| object.key.clone())
        .chain(["manifest".to_owned()])
        .collect();
    expected.sort();
    assert_eq!(listed, expected, "the backup's directory holds exactly the manifest and its objects");
    let mut objects = BTreeMap::new();
    for object in &manifest.objects {
        let plaintext = repository.get_bytes(&layout.backup_object(manifest.id, &object.key)).await.unwrap();
        assert_eq!(plaintext.len() as u64, object.size, "{}", object.key);
        assert_eq!(blake3::hash(&plaintext).to_hex().to_string(), object.blake3, "{}", object.key);
        objects.insert(object.key.clone(), plaintext);
    }
    let mut contents = BTreeMap::new();
    let mut used = BTreeMap::<&str, u64>::new();
    for file in manifest.files.iter().filter(|file| file.kind == EntryKind::File) {
        let mut bytes = Vec::new();
        for piece in &file.locations {
            let object = &objects[&piece.object];
            bytes.extend_from_slice(&object[piece.offset as usize..(piece.offset + piece.length) as usize]);
            *used.entry(&piece.object).or_default() += piece.length;
        }
        assert_eq!(Some(bytes.len() as u64), file.size, "{}", file.path);
        assert_eq!(Some(blake3::hash(&bytes).to_hex().to_string()), file.blake3, "{}", file.path);
        contents.insert(file.path.clone(), bytes);
    }
    for object in &manifest.objects {
        assert_eq!(used.get(object.key.as_str()).copied().unwrap_or(0), object.size, "{} is not all used", object.key);
    }
    if let Some(block_map) = &manifest.block_map {
        let plaintext = repository.get_bytes(&layout.backup_object(manifest.id, &block_map.key)).await.unwrap();
        assert_eq!(blake3::hash(&plaintext).to_hex().to_string(), block_map.blake3, "the block map");
        let mut reader = BlockMapReader::new(plaintext.as_slice()).unwrap();
        let mut mapped = 0;
        while let Some(record) = reader.next_file().unwrap() {
            let bytes = &contents[&record.path];
            let [run] = record.runs.as_slice() else {
                panic!("{}: {} runs in a full backup", record.path, record.runs.len())
            };
            assert_eq!((run.first, run.values.len()), (0, bytes.len() / 8192), "{}: every block", record.path);
            assert_eq!(blockmap::root_hash(&run.values, bytes.len() as u64), blake3::hash(bytes), "{}", record.path);
            mapped += 1;
        }
        assert_eq!(mapped, block_map.files, "the block map's file count");
    }
    contents
}

/// The backup history file PostgreSQL archived for `manifest`, read back from the repository, after
/// checking that the backup's stop segment is there too (a backup completes only once its WAL is).
pub async fn archived_backup_history(repository: &Repository, manifest: &BackupManifest) -> String {
    use lifeboat::catalog::wal::WalFile;
    let layout = layout();
    let size = manifest.wal_segment_size;
    let stop = layout.wal_file(&WalFile::Segment(manifest.stop_segment()), size);
    assert!(repository.store().head(&stop).await.unwrap().is_some(), "{stop} is not in the repository");
    let start = manifest.start_segment();
    let offset = (manifest.start_lsn.as_u64() - start.start_lsn(size).as_u64()) as u32;
    let history = layout.wal_file(&WalFile::BackupHistory { segment: start, offset }, size);
    String::from_utf8(repository.get_bytes(&history).await.unwrap()).unwrap()
}
