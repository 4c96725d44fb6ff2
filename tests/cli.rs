//! The `lifeboat` binary as an operator uses it: exit codes, what it prints, and what it must
//! never print. Each test writes its own configuration into a temporary directory.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::output::{assert_failure, assert_success};
use support::s3::{ACCESS_KEY, S3Server, S3ServerKind, SECRET_KEY};

const PASSPHRASE: &str = "cli test passphrase: correct horse";

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// A local-directory repository opened by a passphrase file.
    fn local() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passphrase"), format!("{PASSPHRASE}\n")).unwrap();
        std::fs::set_permissions(dir.path().join("passphrase"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = format!(
            "[cluster]\nname = \"main\"\n\n[audit]\npath = \"{root}/audit.jsonl\"\n\n[repository]\nurl = \"file://{root}/repo\"\npassphrase_file = \"{root}/passphrase\"\n",
            root = dir.path().display()
        );
        std::fs::write(dir.path().join("lifeboat.toml"), config).unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> PathBuf {
        self.path("lifeboat.toml")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_env(args, &[])
    }

    fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        lifeboat(&self.config(), args, env)
    }
}

fn lifeboat(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    command.arg("--config").arg(config).args(args);
    // Only what the test passes may influence the run: no ambient keys or AWS settings.
    for (variable, _) in std::env::vars_os() {
        let name = variable.to_string_lossy();
        if name.starts_with("LIFEBOAT_") || name.starts_with("AWS_") {
            command.env_remove(&variable);
        }
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}: {}", stdout(output)))
}

#[test]
fn init_creates_an_encrypted_repository_once() {
    let setup = Setup::local();
    let output = setup.run(&["init"]);
    assert_success(&output);
    assert!(stdout(&output).contains("initialised repository"), "{}", stdout(&output));
    assert!(setup.path("repo/lifeboat.repo").is_file());

    let again = setup.run(&["init"]);
    assert!(assert_failure(&again).contains("already holds a repository"));

    let info = json(&setup.run(&["repo", "info", "--json"]));
    assert_eq!(info["cipher"], "aes-256-gcm");
    assert_eq!(info["format_version"], 1);
    assert_eq!(info["slots"].as_array().unwrap().len(), 1);
    assert_eq!(info["slots"][0]["kind"], "passphrase");
    let text = serde_json::to_string(&info).unwrap();
    assert!(!text.contains("wrapped") && !text.contains("salt"), "repo info shows slot internals: {text}");

    // With --json, init prints the repository it created as repo info does.
    let other = Setup::local();
    let created = json(&other.run(&["init", "--json"]));
    assert_eq!(created["schema"], "repository/1");
    let described = json(&other.run(&["repo", "info", "--json"]));
    assert_eq!(created, described);
}

#[test]
fn init_refuses_a_non_empty_directory_and_changes_nothing() {
    let setup = Setup::local();
    std::fs::create_dir_all(setup.path("repo")).unwrap();
    std::fs::write(setup.path("repo/someones-file"), "keep me").unwrap();
    let error = assert_failure(&setup.run(&["init"]));
    assert!(error.contains("not empty") && error.contains("someones-file"), "{error}");
    assert_eq!(std::fs::read_to_string(setup.path("repo/someones-file")).unwrap(), "keep me");
    assert!(!setup.path("repo/lifeboat.repo").exists());
}

#[test]
fn key_slots_can_be_added_and_revoked() {
    let setup = Setup::local();
    assert_success(&setup.run(&["init", "--label", "first"]));
    let key_file = setup.path("archiver.key");
    let key_file_text = key_file.to_str().unwrap();
    assert_success(&setup.run(&["key", "add", "--new-key-file", key_file_text, "--label", "archiver"]));
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);

    let listed = json(&setup.run(&["key", "list", "--json"]));
    assert_eq!(listed["schema"], "key-list/1");
    let slots = listed["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2);
    let passphrase_slot = slots.iter().find(|slot| slot["kind"] == "passphrase").unwrap()["id"].as_str().unwrap();
    assert!(slots.iter().any(|slot| slot["kind"] == "key-file" && slot["label"] == "archiver"));

    let with_key_file = [("LIFEBOAT_KEY_FILE", key_file_text)];
    let check = setup.run_with_env(&["config", "check"], &with_key_file);
    assert_success(&check);
    assert!(stdout(&check).contains("opens with the configured key"), "{}", stdout(&check));

    // Revoke the passphrase, using the key file to open the repository.
    assert_success(&setup.run_with_env(&["key", "remove", passphrase_slot], &with_key_file));
    let revoked = assert_failure(&setup.run(&["config", "check"]));
    assert!(revoked.contains("opens none of the 0") || revoked.contains("has no passphrase slot"), "{revoked}");
    assert_success(&setup.run_with_env(&["config", "check"], &with_key_file));

    // The last slot cannot be removed: that would lock everyone out.
    let key_slot = json(&setup.run(&["key", "list", "--json"]))["slots"][0]["id"].as_str().unwrap().to_owned();
    let last = assert_failure(&setup.run_with_env(&["key", "remove", &key_slot], &with_key_file));
    assert!(last.contains("last key slot"), "{last}");
}

#[test]
fn a_wrong_passphrase_is_a_clear_error_that_does_not_echo_it() {
    let setup = Setup::local();
    assert_success(&setup.run(&["init"]));
    let wrong = "not-the-passphrase-zzz";
    let output = setup.run_with_env(&["config", "check"], &[("LIFEBOAT_PASSPHRASE", wrong)]);
    let error = assert_failure(&output);
    assert!(error.contains("opens none of the 1 passphrase slot"), "{error}");
    assert!(!error.contains(wrong) && !stdout(&output).contains(wrong), "the passphrase was echoed: {error}");
}

#[test]
fn config_show_and_errors_never_print_secrets() {
    let setup = Setup::local();
    let secrets = ["inline-passphrase-9f8e7d", "s3-secret-key-1a2b3c", "db-password-5x6y7z", "env-passphrase-4q5w6e"];
    let config = format!(
        r#"[cluster]
name = "main"
connection = "postgresql://postgres:{db}@localhost/postgres"

[repository]
url = "s3://bucket/prefix"
passphrase = "{inline}"

[repository.s3]
endpoint = "http://127.0.0.1:9"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "{s3}"
"#,
        db = secrets[2],
        inline = secrets[0],
        s3 = secrets[1]
    );
    std::fs::write(setup.config(), config).unwrap();
    let env = [("LIFEBOAT_PASSPHRASE", secrets[3])];
    let show = setup.run_with_env(&["config", "show"], &env);
    assert_success(&show);
    assert!(stdout(&show).contains("<redacted>"));
    // The endpoint is unreachable, so these fail, and their errors must not leak either.
    let check = setup.run_with_env(&["-vv", "config", "check"], &env);
    let info = setup.run_with_env(&["-vv", "repo", "info"], &env);
    for output in [&show, &check, &info] {
        let everything = format!("{}{}", stdout(output), stderr(output));
        for secret in secrets {
            assert!(!everything.contains(secret), "secret {secret} printed:\n{everything}");
        }
    }
    assert!(stderr(&check).contains("127.0.0.1:9"), "the unreachable endpoint should be named: {}", stderr(&check));
}

#[test]
fn malformed_configuration_names_file_line_and_key() {
    let setup = Setup::local();
    let config_path = setup.config();
    let cases: [(&str, &str, &str); 4] = [
        (
            "[cluster]\nname = \"main\"\n[repository]\nurl = \"file:///r\"\ncompresion = 3\n",
            ":5:",
            "repository.compresion",
        ),
        (
            "[cluster]\nname = \"main\"\n[repository]\ncompression = { algorithm = \"zstd\", level = \"high\" }\n",
            ":4:",
            "repository.compression.level",
        ),
        ("[cluster]\nname = \"main\"\n[repository\nurl = 1\n", ":3:", ""),
        ("[cluster]\npgdata = \"/var/lib/postgresql/15/main\"\n", ":1:", "cluster.name"),
    ];
    for (text, line, key) in cases {
        std::fs::write(&config_path, text).unwrap();
        let error = assert_failure(&setup.run(&["config", "check", "--offline"]));
        let location = format!("{}{line}", config_path.display());
        assert!(error.contains(&location), "expected {location} in: {error}");
        assert!(error.contains(key), "expected key {key:?} in: {error}");
    }
    let missing = setup.path("absent.toml");
    let error = assert_failure(&lifeboat(&missing, &["config", "check"], &[]));
    assert!(error.contains("absent.toml") && error.contains("lifeboat.example.toml"), "{error}");
}

#[test]
fn the_example_configuration_validates() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lifeboat.example.toml");
    let output = lifeboat(&example, &["config", "check", "--offline"], &[]);
    assert_success(&output);
}

#[tokio::test(flavor = "multi_thread")]
async fn init_and_inspect_a_repository_on_s3() {
    let server = S3Server::start(S3ServerKind::S3sFs).await;
    let bucket = server.fresh_bucket().await.bucket;
    let setup = Setup::local();
    let write_config = |bucket: &str| {
        let config = format!(
            "[cluster]\nname = \"main\"\n\n[repository]\nurl = \"s3://{bucket}/prod\"\npassphrase_file = \"{root}/passphrase\"\n\n\
             [repository.s3]\nendpoint = \"{endpoint}\"\nforce_path_style = true\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n",
            root = setup.dir.path().display(),
            endpoint = server.endpoint(),
        );
        std::fs::write(setup.config(), config).unwrap();
    };
    write_config(&bucket);
    assert_success(&setup.run(&["init"]));
    let info = json(&setup.run(&["repo", "info", "--json"]));
    assert_eq!(info["location"], format!("s3://{bucket}/prod"));
    assert_success(&setup.run(&["config", "check"]));

    write_config("no-such-bucket");
    let error = assert_failure(&setup.run(&["repo", "info"]));
    assert!(error.contains("no-such-bucket"), "{error}");
    assert!(!error.contains(SECRET_KEY), "{error}");
}

#[test]
fn missing_s3_credentials_are_named_as_such() {
    let setup = Setup::local();
    let config = format!(
        "[cluster]\nname = \"main\"\n\n[repository]\nurl = \"s3://bucket/prod\"\npassphrase_file = \"{}\"\n\n\
         [repository.s3]\nendpoint = \"http://127.0.0.1:9\"\nforce_path_style = true\n",
        setup.path("passphrase").display()
    );
    std::fs::write(setup.config(), config).unwrap();
    let nowhere = setup.path("no-aws-config");
    let nowhere = nowhere.to_str().unwrap();
    let env =
        [("AWS_EC2_METADATA_DISABLED", "true"), ("AWS_CONFIG_FILE", nowhere), ("AWS_SHARED_CREDENTIALS_FILE", nowhere)];
    let error = assert_failure(&setup.run_with_env(&["repo", "info"], &env));
    assert!(error.contains("no S3 credentials found") && error.contains("AWS_ACCESS_KEY_ID"), "{error}");
}
