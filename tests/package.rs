//! The Debian package: `scripts/package` builds a `.deb` (from the binary this test run already
//! built, so no release build), which is unpacked into a scratch root with `dpkg -x` and searched
//! for everything a DBA expects after `apt install`: the binary, the unit, the configuration, the
//! man pages and the completions, and no maintainer script that would enable or start a service.

use std::path::Path;
use std::process::Command;

/// Runs `program` and returns its stdout, failing the test with its stderr when it fails.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn gunzip(path: &Path) -> String {
    run(Command::new("gzip").arg("-dc").arg(path))
}

#[test]
fn package_holds_binary_unit_config_man_pages_and_completions() {
    let scratch = tempfile::tempdir().unwrap();
    let deb = scratch.path().join("lifeboat.deb");
    // cargo-deb packages release builds: a scratch target directory whose release/lifeboat is
    // the binary this test run built stands in for one, so the test needs no release build.
    let target = scratch.path().join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_lifeboat"), target.join("release/lifeboat")).unwrap();
    let printed = run(Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/package"))
        .env("CARGO_TARGET_DIR", &target)
        .args(["--no-build", "--output"])
        .arg(&deb));
    assert_eq!(printed.trim(), deb.to_str().unwrap(), "scripts/package prints the path of the .deb");

    let root = scratch.path().join("root");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root));

    let installed = root.join("usr/bin/lifeboat");
    let version = run(Command::new(&installed).arg("--version"));
    assert_eq!(version.trim(), format!("lifeboat {}", env!("CARGO_PKG_VERSION")));

    let unit = std::fs::read_to_string(root.join("lib/systemd/system/lifeboat.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/lifeboat daemon"), "unit:\n{unit}");
    assert!(unit.contains("Type=notify"), "unit:\n{unit}");

    let config = std::fs::read_to_string(root.join("etc/lifeboat/lifeboat.toml")).unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/lifeboat.example.toml")).unwrap();
    assert_eq!(config, example, "/etc/lifeboat/lifeboat.toml is the documented example");

    let man = root.join("usr/share/man/man1");
    let main_page = gunzip(&man.join("lifeboat.1.gz"));
    assert!(main_page.contains(".TH lifeboat 1") && main_page.contains("lifeboat\\-backup"), "{main_page}");
    for page in ["lifeboat-backup.1.gz", "lifeboat-restore.1.gz", "lifeboat-key-add.1.gz", "lifeboat-completions.1.gz"]
    {
        assert!(gunzip(&man.join(page)).contains(".TH "), "{page} is not a man page");
    }

    let bash = std::fs::read_to_string(root.join("usr/share/bash-completion/completions/lifeboat")).unwrap();
    assert!(bash.contains("_lifeboat()") && bash.contains("wal-push"), "bash completions:\n{bash}");
    let zsh = std::fs::read_to_string(root.join("usr/share/zsh/vendor-completions/_lifeboat")).unwrap();
    assert!(zsh.starts_with("#compdef lifeboat"), "zsh completions:\n{zsh}");
    let fish = std::fs::read_to_string(root.join("usr/share/fish/vendor_completions.d/lifeboat.fish")).unwrap();
    assert!(fish.contains("complete -c lifeboat"), "fish completions:\n{fish}");

    // The control data: the configuration is a conffile (an upgrade keeps the DBA's edits), no
    // PostgreSQL major is required, and nothing enables or starts the service on install.
    let control = scratch.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(conffiles.lines().any(|line| line == "/etc/lifeboat/lifeboat.toml"), "conffiles:\n{conffiles}");
    let fields = std::fs::read_to_string(control.join("control")).unwrap();
    assert!(fields.contains("Recommends: postgresql-client\n"), "control:\n{fields}");
    assert!(!fields.contains("postgresql-1"), "no PostgreSQL major may be required:\n{fields}");
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        let Ok(text) = std::fs::read_to_string(control.join(script)) else { continue };
        let code: String =
            text.lines().filter(|line| !line.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
        for starts_a_service in ["systemctl", "deb-systemd-helper", "deb-systemd-invoke", "invoke-rc.d"] {
            assert!(!code.contains(starts_a_service), "{script} runs {starts_a_service}:\n{text}");
        }
        run(Command::new("sh").arg("-n").arg(control.join(script)));
    }
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("/var/lib/lifeboat"), "postinst:\n{postinst}");
}
