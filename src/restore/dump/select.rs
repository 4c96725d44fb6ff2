//! Choosing what a `--table` restore takes: the requested names read every way they can be
//! ([`TableName`]), found in the manifest and the archive ([`choose_tables`]), and the archive
//! entries handed to pg_restore as a `--use-list` ([`select_entries`], [`ListFile`]): each table,
//! its parts, its schema when the target lacks it, and what is left out and why.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use super::target::Target;
use super::toc::{Toc, TocEntry};
use super::{LeftOut, RestoreError};
use crate::catalog::id::BackupId;
use crate::format::dump_manifest::{DatabaseDump, TableRows};
use crate::util::quote_identifier;

/// Entry kinds (pg_restore's "desc") that belong to the table they depend on, and so are restored
/// with it.
pub(super) const PART_OF_TABLE: &[&str] = &[
    "TABLE DATA",
    "SEQUENCE",
    "SEQUENCE OWNED BY",
    "SEQUENCE SET",
    "DEFAULT",
    "CONSTRAINT",
    "CHECK CONSTRAINT",
    "FK CONSTRAINT",
    "INDEX",
    "INDEX ATTACH",
    "TABLE ATTACH",
    "TRIGGER",
    "RULE",
    "POLICY",
    "ROW SECURITY",
    "COMMENT",
    "ACL",
    "SECURITY LABEL",
    "STATISTICS",
    "STATISTICS DATA",
];

/// Kinds that belong to a schema restored with the chosen tables (when the target lacks it).
const PART_OF_SCHEMA: &[&str] = &["COMMENT", "ACL", "SECURITY LABEL"];

/// `name`, `schema.name`, or the same with `"quoted"` parts (for names holding dots or quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TableName {
    /// What the user typed, for messages.
    pub(super) text: String,
    /// The ways to read it: (schema if given, table). Without quotes, every dot may be the
    /// separator (or none is), so `a.b.c` is tried as `a`.`b.c`, `a.b`.`c` and `a.b.c` in any schema.
    readings: Vec<(Option<String>, String)>,
}

impl TableName {
    pub(super) fn parse(text: &str) -> Result<TableName, RestoreError> {
        let bad = |reason| RestoreError::BadTableName { name: text.to_owned(), reason };
        if text.is_empty() {
            return Err(bad("a table name cannot be empty"));
        }
        let readings = if text.contains('"') {
            let parts = split_quoted(text).ok_or_else(|| bad("unbalanced double quotes"))?;
            match <[String; 2]>::try_from(parts) {
                Ok([schema, table]) => vec![(Some(schema), table)],
                Err(parts) if parts.len() == 1 => vec![(None, parts.into_iter().next().expect("one part"))],
                Err(_) => return Err(bad("expected `table` or `schema.table`")),
            }
        } else {
            let mut readings = vec![(None, text.to_owned())];
            for (dot, _) in text.match_indices('.') {
                readings.push((Some(text[..dot].to_owned()), text[dot + 1..].to_owned()));
            }
            readings
        };
        Ok(TableName { text: text.to_owned(), readings })
    }

    pub(super) fn matches(&self, schema: &str, table: &str) -> bool {
        self.readings.iter().any(|(want_schema, want_table)| {
            want_table == table && want_schema.as_deref().is_none_or(|want_schema| want_schema == schema)
        })
    }
}

/// `"a.b".c` → `["a.b", "c"]`: parts separated by dots, each quoted (`""` for a quote) or not
/// (taken as it is: no case folding). `None` when a quote is unbalanced.
fn split_quoted(text: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            ('"', true) => quoted = false,
            ('.', false) => parts.push(std::mem::take(&mut current)),
            (c, _) => current.push(c),
        }
    }
    if quoted {
        return None;
    }
    parts.push(current);
    Some(parts)
}

/// `schema.table` for messages: each part quoted only when it needs to be.
pub fn display_table(schema: &str, table: &str) -> String {
    format!("{}.{}", display_identifier(schema), display_identifier(table))
}

fn display_identifier(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain { name.to_owned() } else { quote_identifier(name) }
}

/// The tables a `--table` restore takes, found in the manifest and the archive.
#[derive(Debug)]
pub(super) struct ChosenTables {
    /// `TABLE` entries: the chosen tables, and the partitions of chosen partitioned tables.
    pub(super) entries: Vec<u32>,
    /// Those that hold rows, with the dump's counts, in manifest order.
    pub(super) tables: Vec<TableRows>,
}

pub(super) fn choose_tables(
    id: BackupId,
    database: &DatabaseDump,
    toc: &Toc,
    requested: &[TableName],
) -> Result<ChosenTables, RestoreError> {
    let mut chosen_rows: BTreeSet<usize> = BTreeSet::new();
    let mut containers: Vec<u32> = Vec::new();
    for name in requested {
        let in_manifest: Vec<usize> = database
            .tables
            .iter()
            .enumerate()
            .filter(|(_, table)| name.matches(&table.schema, &table.table))
            .map(|(index, _)| index)
            .collect();
        match in_manifest.as_slice() {
            [index] => {
                chosen_rows.insert(*index);
                continue;
            }
            [] => {}
            several => {
                return Err(RestoreError::AmbiguousTable {
                    id,
                    database: database.name.clone(),
                    name: name.text.clone(),
                    candidates: several
                        .iter()
                        .map(|&index| display_table(&database.tables[index].schema, &database.tables[index].table))
                        .collect(),
                });
            }
        }
        // Not a table with rows: perhaps a partitioned table, which only the archive lists.
        let mut in_archive: Vec<(u32, String)> = Vec::new();
        for entry in toc.entries.iter().filter(|entry| entry.kind == "TABLE") {
            if let Some((schema, table)) =
                entry.readings().into_iter().find(|(schema, table)| name.matches(schema, table))
            {
                in_archive.push((entry.id, display_table(schema, table)));
            }
        }
        match in_archive.as_slice() {
            [(entry, _)] => containers.push(*entry),
            [] => {
                return Err(RestoreError::NoSuchTable {
                    id,
                    database: database.name.clone(),
                    name: name.text.clone(),
                    available: describe_available(id, database),
                });
            }
            several => {
                return Err(RestoreError::AmbiguousTable {
                    id,
                    database: database.name.clone(),
                    name: name.text.clone(),
                    candidates: several.iter().map(|(_, name)| name.clone()).collect(),
                });
            }
        }
    }

    // Every table of the manifest by its archive entry, to find rows of partitions.
    let mut entry_rows: HashMap<u32, usize> = HashMap::new();
    for (index, table) in database.tables.iter().enumerate() {
        for entry in toc.tables_named(&table.schema, &table.table) {
            entry_rows.entry(entry).or_insert(index);
        }
    }
    let mut entries: Vec<u32> = Vec::new();
    for &index in &chosen_rows {
        let table = &database.tables[index];
        let found = toc.tables_named(&table.schema, &table.table);
        // With names holding spaces, two entries may read alike; the one the manifest maps to it wins.
        let entry = found
            .iter()
            .copied()
            .find(|entry| entry_rows.get(entry) == Some(&index))
            .or_else(|| found.first().copied())
            .ok_or_else(|| RestoreError::NotInArchive {
                database: database.name.clone(),
                table: display_table(&table.schema, &table.table),
            })?;
        entries.push(entry);
    }
    for container in containers {
        for entry in partitions_of(toc, container) {
            if let Some(&index) = entry_rows.get(&entry) {
                chosen_rows.insert(index);
            }
            entries.push(entry);
        }
    }
    entries.sort_unstable();
    entries.dedup();

    // A table's count in the dump includes the rows of its inheritance children: without them the
    // restored count could not match.
    let taken: HashSet<u32> = entries.iter().copied().collect();
    for &entry in &entries {
        let children: Vec<String> = toc
            .dependents(entry)
            .iter()
            .filter_map(|&child| toc.get(child))
            .filter(|child| child.kind == "TABLE" && !taken.contains(&child.id))
            .map(|child| child.describe().trim_start_matches("TABLE ").to_owned())
            .collect();
        if !children.is_empty() && entry_rows.contains_key(&entry) {
            let table = &database.tables[entry_rows[&entry]];
            return Err(RestoreError::InheritanceChildren {
                table: display_table(&table.schema, &table.table),
                children,
            });
        }
    }
    let tables = chosen_rows.into_iter().map(|index| database.tables[index].clone()).collect();
    Ok(ChosenTables { entries, tables })
}

/// `container` and every table attached below it (partitions, their partitions...).
fn partitions_of(toc: &Toc, container: u32) -> Vec<u32> {
    let mut found = vec![container];
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        index += 1;
        for &dependent in toc.dependents(parent) {
            let Some(entry) = toc.get(dependent) else { continue };
            let children: Vec<u32> = match entry.kind.as_str() {
                // `CREATE TABLE ... PARTITION OF` (older pg_dump) or inheritance.
                "TABLE" => vec![dependent],
                // `ALTER TABLE parent ATTACH PARTITION child`: the other table it depends on.
                "TABLE ATTACH" => entry
                    .dependencies
                    .iter()
                    .copied()
                    .filter(|&other| other != parent && toc.get(other).is_some_and(|other| other.kind == "TABLE"))
                    .collect(),
                _ => Vec::new(),
            };
            for child in children {
                if !found.contains(&child) {
                    found.push(child);
                }
            }
        }
    }
    found
}

/// The tables a database of a dump has, for an error message (the first few).
fn describe_available(id: BackupId, database: &DatabaseDump) -> String {
    const SHOWN: usize = 20;
    if database.tables.is_empty() {
        return "the database has no tables".to_owned();
    }
    let names: Vec<String> =
        database.tables.iter().take(SHOWN).map(|table| display_table(&table.schema, &table.table)).collect();
    let more = database.tables.len().saturating_sub(SHOWN);
    if more == 0 {
        format!("it has: {}", names.join(", "))
    } else {
        format!("it has: {} and {more} more (`lifeboat info {id} --json` lists them all)", names.join(", "))
    }
}

/// The entries a `--table` restore hands pg_restore.
#[derive(Debug)]
pub(super) struct Selection {
    pub(super) included: HashSet<u32>,
    pub(super) left_out: Vec<LeftOut>,
}

/// Chooses the entries for `chosen` tables: the tables, their schemas when the target lacks
/// them, and the parts of the tables that can be restored (see the module documentation).
pub(super) async fn select_entries(
    toc: &Toc,
    chosen: &ChosenTables,
    target: &mut Target,
) -> Result<Selection, RestoreError> {
    let tables: HashSet<u32> = chosen.entries.iter().copied().collect();
    // A schema the target lacks is created, with its comment and grants.
    let mut schemas: HashSet<u32> = HashSet::new();
    for &table in &chosen.entries {
        for &dependency in &toc.get(table).map(|entry| entry.dependencies.clone()).unwrap_or_default() {
            let Some(schema) = toc.get(dependency).filter(|entry| entry.kind == "SCHEMA") else { continue };
            if schemas.contains(&dependency) {
                continue;
            }
            let mut exists = false;
            for (_, name) in schema.readings().into_iter().filter(|(no_schema, _)| *no_schema == "-") {
                exists |= target.has_schema(name).await?;
            }
            if !exists {
                schemas.insert(dependency);
            }
        }
    }
    let mut seeds: HashSet<u32> = tables.union(&schemas).copied().collect();
    for &schema in &schemas {
        seeds.extend(toc.dependents(schema).iter().copied().filter(|&dependent| {
            toc.get(dependent).is_some_and(|entry| {
                PART_OF_SCHEMA.contains(&entry.kind.as_str()) && entry.dependencies.iter().all(|&on| on == schema)
            })
        }));
    }

    // Everything of a kind that is part of a table and depends, directly or through other such
    // entries, on a chosen table. What else depends on them is related, but not restored.
    let mut scope: HashSet<u32> = HashSet::new();
    let mut related: BTreeSet<u32> = BTreeSet::new();
    let mut queue: Vec<u32> = chosen.entries.clone();
    while let Some(id) = queue.pop() {
        for &dependent in toc.dependents(id) {
            if seeds.contains(&dependent) || scope.contains(&dependent) {
                continue;
            }
            let Some(entry) = toc.get(dependent) else { continue };
            if PART_OF_TABLE.contains(&entry.kind.as_str()) {
                scope.insert(dependent);
                queue.push(dependent);
            } else {
                related.insert(dependent);
            }
        }
    }
    let restored = |id: &u32| seeds.contains(id) || scope.contains(id);

    // The objects outside the selection that parts need: are they on the target?
    let mut present: HashMap<u32, bool> = HashMap::new();
    for &id in &scope {
        for &dependency in &toc.get(id).expect("scope holds entries").dependencies {
            let Some((object, needed)) =
                toc.needed(dependency).filter(|(object, _)| !restored(&dependency) && !restored(object))
            else {
                continue;
            };
            if present.contains_key(&object) {
                continue;
            }
            let mut exists = false;
            for (schema, name) in toc.get(object).expect("needed returns entries").readings() {
                if target.has(needed, schema, name).await? {
                    exists = true;
                    break;
                }
            }
            present.insert(object, exists);
        }
    }

    // Decide, then leave out whatever depends on something left out, until nothing changes.
    let mut left_out: Vec<(u32, String)> = Vec::new();
    for &id in &scope {
        let entry = toc.get(id).expect("scope holds entries");
        if entry.kind == "FK CONSTRAINT"
            && let Some(owner) = own_table(toc, entry)
            && !tables.contains(&owner)
        {
            left_out
                .push((id, format!("a foreign key of {}, which is not restored", describe_in_sentence(toc, owner))));
            continue;
        }
        let missing = entry.dependencies.iter().find_map(|&dependency| {
            let (object, _) = toc.needed(dependency).filter(|_| !restored(&dependency))?;
            (present.get(&object) == Some(&false)).then_some(object)
        });
        if let Some(object) = missing {
            left_out.push((
                id,
                format!("needs {}, which is neither restored nor on the target", describe_in_sentence(toc, object)),
            ));
        }
    }
    let mut included: HashSet<u32> =
        scope.iter().copied().filter(|id| !left_out.iter().any(|(out, _)| out == id)).collect();
    loop {
        let dropped: Vec<(u32, String)> = included
            .iter()
            .filter_map(|&id| {
                let entry = toc.get(id)?;
                let missing =
                    entry.dependencies.iter().find(|dependency| left_out.iter().any(|(out, _)| out == *dependency))?;
                Some((id, format!("depends on {}, which is left out", describe_in_sentence(toc, *missing))))
            })
            .collect();
        if dropped.is_empty() {
            break;
        }
        for (id, reason) in dropped {
            included.remove(&id);
            left_out.push((id, reason));
        }
    }
    included.extend(seeds);

    for id in related {
        if !included.contains(&id) {
            left_out.push((id, "uses a restored table but is not part of it".to_owned()));
        }
    }
    left_out.sort_by_key(|(id, _)| toc.position.get(id).copied());
    let left_out = left_out
        .into_iter()
        .filter_map(|(id, reason)| Some(LeftOut { entry: toc.get(id)?.describe(), reason }))
        .collect();
    Ok(Selection { included, left_out })
}

/// The table a foreign key belongs to (not the one it references): the `TABLE` it depends on
/// whose name begins the constraint's name (`<schema> <table> <constraint>`).
fn own_table(toc: &Toc, constraint: &TocEntry) -> Option<u32> {
    constraint.dependencies.iter().copied().find(|&dependency| {
        toc.get(dependency).is_some_and(|table| {
            table.kind == "TABLE"
                && table
                    .readings()
                    .iter()
                    .any(|(schema, name)| constraint.names.starts_with(&format!("{schema} {name} ")))
        })
    })
}

/// `table public customers`: an entry as a sentence names it.
fn describe_in_sentence(toc: &Toc, id: u32) -> String {
    let Some(entry) = toc.get(id) else { return format!("entry {id}") };
    let description = entry.describe();
    match description.split_once(' ') {
        Some((kind, rest)) => format!("{} {rest}", kind.to_lowercase()),
        None => description,
    }
}

/// The `--use-list` file: the chosen entries' lines in archive order, private to this user, and
/// removed when dropped.
pub(super) struct ListFile {
    pub(super) path: PathBuf,
}

impl ListFile {
    pub(super) fn write(toc: &Toc, ids: &HashSet<u32>) -> Result<ListFile, RestoreError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("the operating system provides random numbers");
        let path =
            std::env::temp_dir().join(format!("lifeboat-restore-{}-{}.list", std::process::id(), hex::encode(random)));
        let error = |source| RestoreError::ListFile { path: path.clone(), source };
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(error)?;
        let list = ListFile { path: path.clone() };
        let mut text = String::new();
        for entry in toc.entries.iter().filter(|entry| ids.contains(&entry.id)) {
            text.push_str(&entry.line);
            text.push('\n');
        }
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(error)?;
        Ok(list)
    }
}

impl Drop for ListFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::super::toc::tests::LISTING;
    use super::*;

    fn manifest_database() -> DatabaseDump {
        let now = chrono::Utc::now();
        let rows = |schema: &str, table: &str, rows| TableRows { schema: schema.into(), table: table.into(), rows };
        DatabaseDump {
            name: "src".into(),
            object: crate::format::dump_manifest::DumpObject {
                key: "k".into(),
                size: 1,
                stored_size: 1,
                blake3: String::new(),
            },
            snapshot: String::new(),
            started_at: now,
            finished_at: now,
            tables: vec![
                rows("app", "customers", 3),
                rows("app", "orders", 10),
                rows("public", "customers", 10),
                rows("public", "parted_1", 0),
            ],
        }
    }

    fn id() -> BackupId {
        "20261127T053000Z-dump".parse().unwrap()
    }

    #[test]
    fn table_names_are_read_every_way_they_can_be() {
        let plain = TableName::parse("orders").unwrap();
        assert!(plain.matches("app", "orders") && plain.matches("public", "orders"));
        let qualified = TableName::parse("app.orders").unwrap();
        assert!(qualified.matches("app", "orders") && !qualified.matches("public", "orders"));
        let dotted = TableName::parse("a.b.c").unwrap();
        assert!(dotted.matches("a", "b.c") && dotted.matches("a.b", "c") && dotted.matches("x", "a.b.c"));
        let quoted = TableName::parse(r#""Sales Data"."Big ""Quoted"" Table""#).unwrap();
        assert_eq!(quoted.readings, [(Some("Sales Data".to_owned()), "Big \"Quoted\" Table".to_owned())]);
        assert!(TableName::parse(r#""unbalanced"#).is_err());
        assert!(TableName::parse(r#""a"."b"."c""#).is_err());
        assert!(TableName::parse("").is_err());
        assert_eq!(display_table("Sales Data", "t"), "\"Sales Data\".t");
    }

    #[test]
    fn chosen_tables_come_from_the_manifest_and_partitioned_ones_from_the_archive() {
        let toc = Toc::parse(LISTING);
        let database = manifest_database();
        let names = |names: &[&str]| names.iter().map(|name| TableName::parse(name).unwrap()).collect::<Vec<_>>();

        let chosen = choose_tables(id(), &database, &toc, &names(&["app.orders"])).unwrap();
        assert_eq!(chosen.entries, [218]);
        assert_eq!(chosen.tables, [database.tables[1].clone()]);

        let error = choose_tables(id(), &database, &toc, &names(&["customers"])).unwrap_err().to_string();
        assert!(error.contains("several schemas") && error.contains("app.customers, public.customers"), "{error}");
        let error = choose_tables(id(), &database, &toc, &names(&["nope"])).unwrap_err().to_string();
        assert!(error.contains("no table \"nope\"") && error.contains("app.orders"), "{error}");
        let error = choose_tables(id(), &database, &toc, &names(&["v"])).unwrap_err().to_string();
        assert!(error.contains("no table \"v\""), "a view is not a table: {error}");

        // A partitioned table holds no rows (it is not in the manifest) and brings its partitions.
        let chosen = choose_tables(id(), &database, &toc, &names(&["parted"])).unwrap();
        assert_eq!(chosen.entries, [221, 222]);
        assert_eq!(chosen.tables, [database.tables[3].clone()]);
        assert_eq!(own_table(&toc, toc.get(3232).unwrap()), Some(218));
    }
}
