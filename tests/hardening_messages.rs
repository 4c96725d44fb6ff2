//! Regression tests of issue 9, defects 7 to 9, through the built binary where the operator sees
//! them: the restore log in a data directory that holds a plain file `log` (on a real cluster),
//! errors that blamed the wrong thing or pointed nowhere, and `lifeboat key check`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;

use lifeboat::keys::Unlock;
use lifeboat::keys::slots::KeyFile;
use lifeboat::object::WriteOptions;
use lifeboat::repository::Repository;
use lifeboat::storage::local::LocalStore;
use lifeboat::storage::{ObjectKey, PutMode};
use support::archiving::{Setup, archive_current_segment, lifeboat_command};
use support::output::{assert_failure, assert_success, describe};
use support::restored::{Restored, free_port};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    assert_success(output);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}: {}", describe(output)))
}

/// Two local repositories side by side, `ours` and `theirs`, each with its own key file, and a
/// configuration per repository (cluster `main`).
struct Repositories {
    dir: tempfile::TempDir,
}

impl Repositories {
    fn new() -> Repositories {
        let dir = tempfile::tempdir().unwrap();
        let repositories = Repositories { dir };
        for name in ["ours", "theirs"] {
            repositories.write_config(name, &format!("key_file = \"{}\"\n", repositories.key_file(name).display()));
            assert_success(&repositories.run(name, &["init", "--label", name]));
        }
        repositories
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn key_file(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}.key"))
    }

    fn config(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}.toml"))
    }

    /// The configuration of repository `name`, opened by `key` (a `key_file = ...` line or the like).
    fn write_config(&self, name: &str, key: &str) {
        let config = format!(
            "[cluster]\nname = \"main\"\n\n[audit]\npath = \"{}\"\n\n[repository]\nurl = \"file://{}\"\n{key}",
            self.path("audit.jsonl").display(),
            self.path(name).display()
        );
        std::fs::write(self.config(name), config).unwrap();
    }

    fn run(&self, name: &str, args: &[&str]) -> Output {
        lifeboat_command(&self.config(name), args).output().unwrap()
    }

    fn repository_id(&self, name: &str) -> String {
        json(&self.run(name, &["repo", "info", "--json"]))["repository_id"].as_str().unwrap().to_owned()
    }

    fn key_id(&self, name: &str) -> String {
        json(&self.run(name, &["repo", "info", "--json"]))["key_id"].as_str().unwrap().to_owned()
    }

    /// Stores the cluster's identity record in repository `name`, sealed with its key, as its
    /// first backup or WAL would.
    async fn store_cluster_record(&self, name: &str) {
        let unlock = Unlock::KeyFile(KeyFile::load(&self.key_file(name)).unwrap());
        let store = Arc::new(LocalStore::new(self.path(name)));
        let repository = Repository::open(store, Some(&unlock), WriteOptions::default()).await.unwrap();
        let record = br#"{"format":"lifeboat-cluster","version":1}"#.to_vec();
        let key = ObjectKey::new("clusters/main/cluster").unwrap();
        repository.put_bytes(&key, record, PutMode::CreateOnly).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_7_a_plain_file_named_log_in_the_data_directory_does_not_stop_restore_start_or_verify() {
    let setup = Setup::start_verifying("").await;
    // What `pg_ctl -l "$PGDATA/log"` leaves in the data directory; the backup copies it.
    let operators_log = "2026-12-05 03:00:00 UTC LOG:  the operator's own server log\n";
    std::fs::write(setup.cluster.data_dir().join("log"), operators_log).unwrap();
    let backup = setup.backup().await;
    archive_current_segment(&mut setup.connect().await).await;

    let verified = setup.run(&["verify", &backup]);
    assert_success(&verified);

    let pgdata = setup.restore_dir("restored");
    let port = free_port(&setup);
    let port_text = port.to_string();
    let output =
        setup.restore(&pgdata, &["--archive-mode", "off", "--start", "--port", &port_text, "--target", "immediate"]);
    let _server = Restored::of(&setup, pgdata.clone(), port);
    assert_success(&output);
    let restore_log = pgdata.join("lifeboat-restore.log");
    assert!(
        stdout(&output).contains(&format!("server log {}", restore_log.display())),
        "the printed log path is not where the log is: {}",
        describe(&output)
    );
    let logged = std::fs::read_to_string(&restore_log).unwrap();
    assert!(logged.contains("database system is ready to accept connections"), "{logged}");
    assert_eq!(std::fs::read_to_string(pgdata.join("log")).unwrap(), operators_log, "the restored `log` was changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_8_another_repositorys_lifeboat_repo_is_named_instead_of_blaming_the_key() {
    let repositories = Repositories::new();
    repositories.store_cluster_record("ours").await;
    let (our_id, our_key) = (repositories.repository_id("ours"), repositories.key_id("ours"));
    let (their_id, their_key) = (repositories.repository_id("theirs"), repositories.key_id("theirs"));
    let ours = repositories.path("ours");
    let theirs = repositories.path("theirs");

    // Only lifeboat.repo replaced: its copy and the stored object both say so, and the key opens
    // the copy.
    std::fs::copy(theirs.join("lifeboat.repo"), ours.join("lifeboat.repo")).unwrap();
    for args in [&["list"][..], &["key", "check"][..]] {
        let error = assert_failure(&repositories.run("ours", args));
        assert!(!error.contains("the key is wrong"), "{args:?} blames the key: {error}");
        for expected in [
            format!("lifeboat.repo at file://{} belongs to repository {their_id} (key id {their_key})", ours.display()),
            format!("lifeboat.repo.copy belongs to repository {our_id} (key id {our_key})"),
            format!("clusters/main/cluster, stored in it, was sealed with key id {our_key}"),
            "another repository's lifeboat.repo, put in place of this one's".to_owned(),
            "The configured key opens lifeboat.repo.copy".to_owned(),
            format!(
                "copy lifeboat.repo.copy over lifeboat.repo (`cp {0}/lifeboat.repo.copy {0}/lifeboat.repo`)",
                ours.display()
            ),
        ] {
            assert!(error.contains(&expected), "{args:?}: expected {expected:?} in: {error}");
        }
    }

    // Following the advice brings the repository back.
    std::fs::copy(ours.join("lifeboat.repo.copy"), ours.join("lifeboat.repo")).unwrap();
    assert_success(&repositories.run("ours", &["key", "check"]));

    // Both replaced: the stored object alone says so.
    std::fs::copy(theirs.join("lifeboat.repo"), ours.join("lifeboat.repo")).unwrap();
    std::fs::copy(theirs.join("lifeboat.repo.copy"), ours.join("lifeboat.repo.copy")).unwrap();
    let error = assert_failure(&repositories.run("ours", &["list"]));
    for expected in [
        format!("belongs to repository {their_id} (key id {their_key})"),
        format!("was sealed with key id {our_key}"),
        format!("Put back this repository's own lifeboat.repo (the one with key id {our_key})"),
    ] {
        assert!(error.contains(&expected), "expected {expected:?} in: {error}");
    }

    // Their key opens their lifeboat.repo, but not our objects: `key check` says so.
    let their_key_file = format!("key_file = \"{}\"\n", repositories.key_file("theirs").display());
    repositories.write_config("ours", &their_key_file);
    let error = assert_failure(&repositories.run("ours", &["key", "check"]));
    assert!(error.contains(&format!("was sealed with key id {our_key}")), "{error}");
}

#[test]
fn hardening_8_a_too_short_key_file_suggests_the_option_that_exists() {
    let repositories = Repositories::new();
    let weak = repositories.path("weak.key");
    std::fs::write(&weak, "password1\n").unwrap();
    std::fs::set_permissions(&weak, std::fs::Permissions::from_mode(0o600)).unwrap();
    repositories.write_config("ours", &format!("key_file = \"{}\"\n", weak.display()));
    let error = assert_failure(&repositories.run("ours", &["list"]));
    assert!(
        error.contains(&format!("key file {}", weak.display())) && error.contains("fewer than 32 bytes"),
        "{error}"
    );
    assert!(error.contains(&format!("`lifeboat key add --new-key-file {}`", weak.display())), "{error}");
    assert!(!error.contains("add --key-file"), "suggests an option that does not exist: {error}");
}

#[test]
fn hardening_8_an_unknown_format_version_is_named_with_the_supported_one() {
    let repositories = Repositories::new();
    // A future lifeboat.repo: another version, whose fields are not version 1's.
    let future = r#"{"format": "lifeboat-repository", "version": 2, "id": "0123", "keys": []}"#;
    for name in ["lifeboat.repo", "lifeboat.repo.copy"] {
        std::fs::write(repositories.path("ours").join(name), future).unwrap();
    }
    for args in [&["repo", "info"][..], &["key", "check"][..], &["list"][..]] {
        let error = assert_failure(&repositories.run("ours", args));
        assert!(
            error.contains("lifeboat.repo has format version 2") && error.contains("reads version 1 only"),
            "{args:?}: {error}"
        );
        assert!(!error.contains("missing field") && !error.contains("unknown field"), "{args:?}: {error}");
    }
}

/// The uid and gid of the PostgreSQL OS user the tests run servers as.
fn postgres_user() -> (u32, u32) {
    // SAFETY: getpwnam with a NUL-terminated name; the result is read at once, before any other call.
    let entry = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    assert!(!entry.is_null(), "the tests need a postgres OS user");
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}

#[test]
fn hardening_8_configuration_and_key_file_errors_name_the_path_and_the_next_step() {
    let repositories = Repositories::new();
    let dir = repositories.dir.path();

    // A directory given as the configuration: the file inside it is suggested.
    std::fs::copy(repositories.config("ours"), dir.join("lifeboat.toml")).unwrap();
    let error = assert_failure(&lifeboat_command(dir, &["repo", "info"]).output().unwrap());
    assert!(error.contains(&format!("the configuration file {} (given with --config) is a directory", dir.display())));
    assert!(error.contains(&format!("Did you mean --config {}?", dir.join("lifeboat.toml").display())), "{error}");

    // A file this user may not read: says which user, and what to do.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(repositories.config("ours"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let (uid, gid) = postgres_user();
    let mut as_postgres = lifeboat_command(&repositories.config("ours"), &["repo", "info"]);
    as_postgres.uid(uid).gid(gid);
    let error = assert_failure(&as_postgres.output().unwrap());
    assert!(error.contains(&format!("cannot read the configuration file {}", repositories.config("ours").display())));
    assert!(
        error.contains(&format!("This user (uid {uid}) may not read it")) && error.contains("chmod 640"),
        "{error}"
    );

    // Not text.
    std::fs::write(dir.join("binary.toml"), [0xff, 0xfe, 0x00, 0x01]).unwrap();
    let error = assert_failure(&lifeboat_command(&dir.join("binary.toml"), &["repo", "info"]).output().unwrap());
    assert!(error.contains("binary.toml") && error.contains("must be UTF-8 text"), "{error}");

    // A key file that is not there: named, with where it is configured and what to do.
    let missing = repositories.path("gone.key");
    repositories.write_config("ours", &format!("key_file = \"{}\"\n", missing.display()));
    let error = assert_failure(&repositories.run("ours", &["list"]));
    assert!(error.contains(&format!("key file {}: does not exist", missing.display())), "{error}");
    assert!(error.contains("repository.key_file") && error.contains("put the repository's key file back"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_9_key_check_says_which_slot_the_configured_key_opens() {
    let repositories = Repositories::new();
    let passphrase_file = repositories.path("passphrase");
    std::fs::write(&passphrase_file, "key check test: a long passphrase\n").unwrap();
    std::fs::set_permissions(&passphrase_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let passphrase_file_text = passphrase_file.to_str().unwrap();
    assert_success(
        &repositories.run("ours", &["key", "add", "--new-passphrase-file", passphrase_file_text, "--label", "dr site"]),
    );
    let slots = json(&repositories.run("ours", &["key", "list", "--json"]));
    let slot_of = |kind: &str| {
        slots["slots"].as_array().unwrap().iter().find(|slot| slot["kind"] == kind).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (key_file_slot, passphrase_slot) = (slot_of("key-file"), slot_of("passphrase"));

    // The key file: slot, kind and label, and nothing stored yet to read.
    let output = repositories.run("ours", &["key", "check"]);
    assert_success(&output);
    let text = stdout(&output);
    assert!(text.contains(&format!("opens slot  {key_file_slot} (key-file, label \"ours\"")), "{text}");
    assert!(text.contains("nothing stored yet"), "{text}");

    // The passphrase, with an object to read and authenticate.
    repositories.store_cluster_record("ours").await;
    repositories.write_config("ours", &format!("passphrase_file = \"{passphrase_file_text}\"\n"));
    let checked = json(&repositories.run("ours", &["key", "check", "--json"]));
    assert_eq!(checked["slot"]["id"], passphrase_slot.as_str());
    assert_eq!(checked["slot"]["kind"], "passphrase");
    assert_eq!(checked["slot"]["label"], "dr site");
    assert_eq!(checked["repository_id"], repositories.repository_id("ours").as_str());
    assert_eq!(checked["checked_object"], "clusters/main/cluster");
    assert!(checked["key"].as_str().unwrap().contains("repository.passphrase_file"), "{checked}");
    assert!(!checked.to_string().contains("a long passphrase"), "the passphrase was printed: {checked}");

    // A wrong passphrase opens no slot.
    std::fs::write(&passphrase_file, "not the passphrase\n").unwrap();
    let output = repositories.run("ours", &["key", "check"]);
    let error = assert_failure(&output);
    assert!(error.contains("the passphrase opens none of the 1 passphrase slot(s)"), "{error}");
    assert!(stdout(&output).is_empty(), "{}", describe(&output));

    // No key at all.
    repositories.write_config("ours", "");
    let error = assert_failure(&repositories.run("ours", &["key", "check"]));
    assert!(error.contains("is encrypted and no key is configured"), "{error}");

    // A removed slot no longer opens it.
    repositories.write_config("ours", &format!("key_file = \"{}\"\n", repositories.key_file("ours").display()));
    assert_success(&repositories.run("ours", &["key", "remove", &passphrase_slot]));
    std::fs::write(&passphrase_file, "key check test: a long passphrase\n").unwrap();
    repositories.write_config("ours", &format!("passphrase_file = \"{passphrase_file_text}\"\n"));
    let error = assert_failure(&repositories.run("ours", &["key", "check"]));
    assert!(error.contains("has no passphrase slot"), "{error}");
}
