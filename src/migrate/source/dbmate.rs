//! dbmate's layout: `<digits>[_name].sql` files (the leading digits are the version), each with
//! a `-- migrate:up` section and an optional `-- migrate:down` section; options follow the marker
//! (`-- migrate:up transaction:false`). A file may repeat the pair; the up sections are read in
//! order as one script, the down sections likewise (their statement lines then count from the
//! first section of the kind).

use std::path::Path;

use super::{Found, Migration, Problem, Script, SourceError, Version, entries, read_text};

const EXPECTED: &str = "expected a dbmate migration: `<version>_<name>.sql` with a `-- migrate:up` line, then the up \
                        statements, then an optional `-- migrate:down` line and the down statements";

pub(super) fn is_marker(line: &str) -> Option<(bool, &str)> {
    let rest = line.trim_start().strip_prefix("--")?.trim_start().strip_prefix("migrate:")?;
    if let Some(options) = rest.strip_prefix("up") {
        Some((true, options))
    } else {
        rest.strip_prefix("down").map(|options| (false, options))
    }
}

/// One run of lines after a marker.
struct Section {
    up: bool,
    transaction: bool,
    first_line: u32,
    text: String,
}

pub(super) fn read(dir: &Path, found: &mut Found) -> Result<(), SourceError> {
    for (name, path, is_dir) in entries(dir)? {
        let Some(stem) = name.strip_suffix(".sql").filter(|_| !is_dir) else { continue };
        let digits = stem.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            found.problems.push(Problem::Unreadable { path, why: EXPECTED.to_owned() });
            continue;
        }
        let version = Version::parse(&stem[..digits]).expect("digits are a version");
        let migration_name = stem[digits..].trim_start_matches('_').to_owned();
        let Some(text) = read_text(&path, &mut found.problems)? else { continue };
        let mut sections: Vec<Section> = Vec::new();
        for (index, line) in text.split_inclusive('\n').enumerate() {
            if let Some((up, options)) = is_marker(line) {
                let transaction = !options.split_whitespace().any(|option| option == "transaction:false");
                sections.push(Section { up, transaction, first_line: index as u32 + 2, text: String::new() });
            } else if let Some(section) = sections.last_mut() {
                section.text.push_str(line);
            }
        }
        if !sections.iter().any(|section| section.up) {
            found.problems.push(Problem::Unreadable { path, why: format!("no `-- migrate:up` line; {EXPECTED}") });
            continue;
        }
        let script = |up: bool, problems: &mut Vec<Problem>| {
            let chosen: Vec<&Section> = sections.iter().filter(|section| section.up == up).collect();
            let first = chosen.first()?;
            let text: String = chosen.iter().map(|section| section.text.as_str()).collect();
            let transaction = chosen.iter().all(|section| section.transaction);
            Some(Script::new(&path, text, transaction, first.first_line, problems))
        };
        let up = script(true, &mut found.problems).expect("an up section exists");
        let down = script(false, &mut found.problems).filter(|down| !down.statements.is_empty());
        found.migrations.push(Migration { version, name: migration_name, up, down });
    }
    Ok(())
}
