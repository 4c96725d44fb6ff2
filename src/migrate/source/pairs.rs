//! The `<version>_<name>.up.sql` / `.down.sql` family: lifeboat's own layout (plus up-only
//! `<version>_<name>.sql`), sqlx's (the same names; an i64 version, `_` in the description read
//! as a space, and `-- no-transaction` as the first bytes) and golang-migrate's (unpadded integer
//! versions, up and down files only; lifeboat reads the `.sql` ones).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Found, Migration, Problem, Script, SourceError, entries, read_text, version_and_name};
use crate::config::MigrationLayout;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Up,
    Down,
    Single,
}

fn expected(layout: MigrationLayout) -> &'static str {
    match layout {
        MigrationLayout::GolangMigrate => {
            "expected golang-migrate's `<version>_<title>.up.sql` / `<version>_<title>.down.sql` with an integer \
             version"
        }
        MigrationLayout::Sqlx => {
            "expected sqlx's `<version>_<description>.sql`, or `.up.sql` with `.down.sql`, where the version is \
             an integer (i64)"
        }
        _ => {
            "expected `<version>_<name>.up.sql` with an optional `<version>_<name>.down.sql`, or an up-only \
             `<version>_<name>.sql`, where the version is digits (e.g. 20240102030405_add_email.up.sql)"
        }
    }
}

struct Pending {
    version: super::Version,
    name: String,
    up: Option<Script>,
    down: Option<Script>,
    down_path: Option<PathBuf>,
}

pub(super) fn read(dir: &std::path::Path, layout: MigrationLayout, found: &mut Found) -> Result<(), SourceError> {
    let mut by_stem: BTreeMap<String, Pending> = BTreeMap::new();
    for (file_name, path, is_dir) in entries(dir)? {
        if is_dir {
            continue;
        }
        let Some(stem) = file_name.strip_suffix(".sql") else {
            // golang-migrate runs `.up.<anything>`; lifeboat runs SQL only, and says so.
            if layout == MigrationLayout::GolangMigrate
                && (file_name.contains(".up.") || file_name.contains(".down."))
                && version_and_name(&file_name).is_some()
            {
                found.problems.push(Problem::Unreadable {
                    path,
                    why: "lifeboat runs only .sql migrations; convert it to a .sql file".to_owned(),
                });
            }
            continue;
        };
        let (base, kind) = if let Some(base) = stem.strip_suffix(".up") {
            (base, Kind::Up)
        } else if let Some(base) = stem.strip_suffix(".down") {
            (base, Kind::Down)
        } else {
            (stem, Kind::Single)
        };
        let parsed = version_and_name(base).filter(|(version, name)| {
            let name_ok = layout == MigrationLayout::GolangMigrate || !name.is_empty();
            let version_ok = layout != MigrationLayout::Sqlx || version.to_i64().is_some();
            let kind_ok = layout != MigrationLayout::GolangMigrate || kind != Kind::Single;
            name_ok && version_ok && kind_ok
        });
        let Some((version, name)) = parsed else {
            found.problems.push(Problem::Unreadable { path, why: expected(layout).to_owned() });
            continue;
        };
        let Some(text) = read_text(&path, &mut found.problems)? else { continue };
        let transaction = !(layout == MigrationLayout::Sqlx && text.starts_with("-- no-transaction"));
        let name = if layout == MigrationLayout::Sqlx { name.replace('_', " ") } else { name.to_owned() };
        let script = Script::new(&path, text, transaction, 1, &mut found.problems);
        let pending = by_stem.entry(base.to_owned()).or_insert_with(|| Pending {
            version,
            name,
            up: None,
            down: None,
            down_path: None,
        });
        match kind {
            Kind::Up | Kind::Single => {
                if let Some(earlier) = pending.up.replace(script) {
                    // `1_a.sql` beside `1_a.up.sql`: two up scripts for one migration.
                    found.migrations.push(Migration {
                        version: pending.version.clone(),
                        name: pending.name.clone(),
                        up: earlier,
                        down: None,
                    });
                }
            }
            Kind::Down => {
                pending.down_path = Some(path);
                pending.down = Some(script);
            }
        }
    }
    for pending in by_stem.into_values() {
        match pending.up {
            Some(up) => found.migrations.push(Migration {
                version: pending.version,
                name: pending.name,
                up,
                down: pending.down,
            }),
            None => {
                if let Some(path) = pending.down_path {
                    found.problems.push(Problem::DownWithoutUp { path });
                }
            }
        }
    }
    Ok(())
}
