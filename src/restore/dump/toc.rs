//! The archive's table of contents: `pg_restore --list --verbose` read from the start of the
//! dump object ([`read_toc`]), parsed into entries with their kinds, names, owners and
//! dependencies ([`Toc`]), and what an entry stands for when a restored part needs it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncReadExt as _;
use tokio_util::sync::CancellationToken;

use super::RestoreError;
use super::pipe::{FeedError, feed, read_error, spawn_piped};
use crate::postgres::process::{PgCommand, describe_exit};
use crate::repository::Repository;
use crate::storage::ObjectKey;

/// Kinds that are relations, which a restored part may need to exist on the target.
const RELATIONS: &[&str] = &["TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE", "SEQUENCE", "INDEX"];

/// Kinds that are functions (a trigger's, a default's, a check's).
const FUNCTIONS: &[&str] = &["FUNCTION", "PROCEDURE", "AGGREGATE"];

/// Kinds that are types (a column's type is the table's own dependency; a part may need one too).
const TYPES: &[&str] = &["TYPE", "DOMAIN"];

/// Kinds that are constraints; the relation they stand for is their table.
const CONSTRAINTS: &[&str] = &["CONSTRAINT", "CHECK CONSTRAINT", "FK CONSTRAINT"];

/// Kinds of more than one word, so a TOC line can be cut into kind and names.
const MULTI_WORD_KINDS: &[&str] = &[
    "TEXT SEARCH CONFIGURATION",
    "PUBLICATION TABLES IN SCHEMA",
    "MATERIALIZED VIEW DATA",
    "TEXT SEARCH DICTIONARY",
    "TEXT SEARCH TEMPLATE",
    "FOREIGN DATA WRAPPER",
    "DATABASE PROPERTIES",
    "PROCEDURAL LANGUAGE",
    "TEXT SEARCH PARSER",
    "SEQUENCE OWNED BY",
    "MATERIALIZED VIEW",
    "PUBLICATION TABLE",
    "CHECK CONSTRAINT",
    "OPERATOR FAMILY",
    "STATISTICS DATA",
    "OPERATOR CLASS",
    "SECURITY LABEL",
    "BLOB METADATA",
    "EVENT TRIGGER",
    "FK CONSTRAINT",
    "FOREIGN TABLE",
    "ACCESS METHOD",
    "INDEX ATTACH",
    "LARGE OBJECT",
    "ROW SECURITY",
    "SEQUENCE SET",
    "TABLE ATTACH",
    "USER MAPPING",
    "DEFAULT ACL",
    "SHELL TYPE",
    "TABLE DATA",
];

/// Kinds pg_restore applies only with `--create`, which a restore into an existing database never
/// uses; their owners need not exist on the target.
const DATABASE_LEVEL: &[&str] = &["ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE", "DATABASE PROPERTIES"];

/// One entry of `pg_restore --list --verbose`.
#[derive(Debug, Clone)]
pub(super) struct TocEntry {
    pub(super) id: u32,
    /// The line as pg_restore printed it (`--use-list` reads only its leading id).
    pub(super) line: String,
    /// The kind: `TABLE`, `TABLE DATA`, `FK CONSTRAINT`...
    pub(super) kind: String,
    /// What follows the kind: `<schema> <name> <owner>`, with `-` for no schema and an empty owner
    /// for none. Names are printed raw, so a name holding a space makes this ambiguous; see
    /// [`TocEntry::named`] and [`TocEntry::readings`].
    pub(super) names: String,
    pub(super) dependencies: Vec<u32>,
}

impl TocEntry {
    /// Whether the entry is `<schema> <name>` (names as in the catalog).
    fn named(&self, schema: &str, name: &str) -> bool {
        let prefix = format!("{} {} ", sanitize(schema), sanitize(name));
        self.names.starts_with(&prefix)
    }

    /// Every way to cut the names into (schema, name, owner).
    pub(super) fn readings(&self) -> Vec<(&str, &str)> {
        let spaces: Vec<usize> = self.names.match_indices(' ').map(|(at, _)| at).collect();
        let mut readings = Vec::new();
        for (index, &first) in spaces.iter().enumerate() {
            for &second in &spaces[index + 1..] {
                readings.push((&self.names[..first], &self.names[first + 1..second]));
            }
        }
        readings
    }

    /// The entry as pg_restore describes it, without the owner: `FK CONSTRAINT public orders orders_fkey`.
    pub(super) fn describe(&self) -> String {
        let names = self.names.rsplit_once(' ').map_or(self.names.as_str(), |(names, _)| names);
        format!("{} {names}", self.kind)
    }
}

/// pg_restore prints names with line breaks turned into spaces.
fn sanitize(name: &str) -> String {
    name.replace(['\n', '\r'], " ")
}

/// The archive's table of contents.
#[derive(Debug, Default)]
pub(super) struct Toc {
    /// In archive order, the order pg_restore restores them in.
    pub(super) entries: Vec<TocEntry>,
    pub(super) position: HashMap<u32, usize>,
    /// Entry id → the entries that depend on it.
    pub(super) dependents: HashMap<u32, Vec<u32>>,
}

impl Toc {
    pub(super) fn parse(listing: &str) -> Toc {
        let mut entries: Vec<TocEntry> = Vec::new();
        for line in listing.lines() {
            if let Some(dependencies) = line.strip_prefix(";\tdepends on:") {
                if let Some(last) = entries.last_mut() {
                    last.dependencies.extend(dependencies.split_whitespace().filter_map(|id| id.parse::<u32>().ok()));
                }
                continue;
            }
            if let Some(entry) = parse_entry(line) {
                entries.push(entry);
            }
        }
        let position = entries.iter().enumerate().map(|(index, entry)| (entry.id, index)).collect();
        let mut dependents: HashMap<u32, Vec<u32>> = HashMap::new();
        for entry in &entries {
            for &dependency in &entry.dependencies {
                dependents.entry(dependency).or_default().push(entry.id);
            }
        }
        Toc { entries, position, dependents }
    }

    pub(super) fn get(&self, id: u32) -> Option<&TocEntry> {
        self.position.get(&id).map(|&index| &self.entries[index])
    }

    pub(super) fn dependents(&self, id: u32) -> &[u32] {
        self.dependents.get(&id).map_or(&[], Vec::as_slice)
    }

    /// Whether this pg_restore printed dependencies (every table's data depends on the table).
    pub(super) fn has_dependencies(&self) -> bool {
        !self.dependents.is_empty() || !self.entries.iter().any(|entry| entry.kind == "TABLE DATA")
    }

    /// The `TABLE` entries named `schema.table`.
    pub(super) fn tables_named(&self, schema: &str, table: &str) -> Vec<u32> {
        self.entries
            .iter()
            .filter(|entry| entry.kind == "TABLE" && entry.named(schema, table))
            .map(|entry| entry.id)
            .collect()
    }

    /// What an entry stands for when a restored part depends on it and it is not restored itself:
    /// the object that must then exist on the target. A constraint stands for its table; relations,
    /// functions and types for themselves; anything else (schemas, extensions, collations...) is
    /// taken to be there.
    pub(super) fn needed(&self, id: u32) -> Option<(u32, Needed)> {
        let entry = self.get(id)?;
        let kind = entry.kind.as_str();
        if RELATIONS.contains(&kind) {
            Some((id, Needed::Relation))
        } else if FUNCTIONS.contains(&kind) {
            Some((id, Needed::Function))
        } else if TYPES.contains(&kind) {
            Some((id, Needed::Type))
        } else if CONSTRAINTS.contains(&kind) {
            let table = entry
                .dependencies
                .iter()
                .copied()
                .find(|&dependency| self.get(dependency).is_some_and(|table| table.kind == "TABLE"))?;
            Some((table, Needed::Relation))
        } else {
            None
        }
    }

    /// The owners of the entries `included` accepts that are not among `roles`, sorted. An owner
    /// counts as present when the entry's line ends with ` <role>` for some existing role (so a
    /// role name holding a space is recognised); the missing name is the line's last word.
    pub(super) fn missing_owners(&self, roles: &HashSet<String>, included: &dyn Fn(u32) -> bool) -> Vec<String> {
        let database_level: HashSet<u32> = self
            .entries
            .iter()
            .filter(|entry| DATABASE_LEVEL.contains(&entry.kind.as_str()))
            .map(|entry| entry.id)
            .collect();
        let mut missing = BTreeSet::new();
        for entry in &self.entries {
            if !included(entry.id)
                || database_level.contains(&entry.id)
                || entry.dependencies.iter().any(|dependency| database_level.contains(dependency))
                || entry.line.ends_with(' ')
            {
                continue;
            }
            if roles.iter().any(|role| entry.line.ends_with(&format!(" {}", sanitize(role)))) {
                continue;
            }
            if let Some((_, owner)) = entry.line.rsplit_once(' ') {
                missing.insert(owner.to_owned());
            }
        }
        missing.into_iter().collect()
    }
}

/// `3391; 0 16398 TABLE DATA app orders app_owner` → an entry (dependencies come on later lines).
fn parse_entry(line: &str) -> Option<TocEntry> {
    let (id, rest) = line.split_once("; ")?;
    let id: u32 = id.trim().parse().ok()?;
    // The catalog ids (table oid, object oid) come before the kind.
    let mut fields = rest.splitn(3, ' ');
    let (_tableoid, _oid, described) = (fields.next()?, fields.next()?, fields.next()?);
    let kind = MULTI_WORD_KINDS
        .iter()
        .find(|kind| described.strip_prefix(**kind).is_some_and(|after| after.starts_with(' ')))
        .map(|kind| (*kind).to_owned())
        .unwrap_or_else(|| described.split(' ').next().unwrap_or_default().to_owned());
    let names = described.get(kind.len() + 1..).unwrap_or_default().to_owned();
    Some(TocEntry { id, line: line.to_owned(), kind, names, dependencies: Vec::new() })
}

/// What kind of object a restored part needs on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Needed {
    Relation,
    Function,
    Type,
}

/// Reads the archive's table of contents: `pg_restore --list --verbose` on the start of the object.
pub(super) async fn read_toc(
    repository: &Repository,
    key: &ObjectKey,
    pg_restore: &Path,
    into: &str,
) -> Result<Toc, RestoreError> {
    let mut command = PgCommand::local(pg_restore);
    command.args(["--list", "--verbose"]);
    let (mut child, stderr) = spawn_piped(pg_restore, command, Stdio::piped())?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");

    let source = repository.get(key).await.map_err(|source| RestoreError::Fetch { key: key.clone(), source })?;
    let never = CancellationToken::new();
    let reading = async {
        let mut listing = String::new();
        stdout.read_to_string(&mut listing).await.map(|_| listing)
    };
    // pg_restore stops reading after the table of contents: the rest need not be read here.
    let (fed, listing) = tokio::join!(feed(source, stdin, false, None, &never), reading);
    let status = child.wait().await;
    let stderr = stderr.lines().await;
    if let Err(FeedError::Read(error)) = fed {
        return Err(RestoreError::Damaged { detail: read_error(key, &error), into: into.to_owned() });
    }
    let succeeded = matches!(&status, Ok(status) if status.success());
    match listing {
        Ok(listing) if succeeded => Ok(Toc::parse(&listing)),
        _ => Err(RestoreError::List {
            key: key.clone(),
            status: describe_exit(&status),
            stderr: if stderr.is_empty() { "(it printed nothing)".to_owned() } else { stderr },
        }),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::restore::dump) const LISTING: &str = "\
;
; Archive created at 2026-11-27 05:32:56 UTC
;     dbname: src
;
; Selected TOC Entries:
;
3387; 0 0 ENCODING - ENCODING 
3390; 1262 16384 DATABASE - src postgres
6; 2615 16385 SCHEMA - app postgres
223; 1255 16419 FUNCTION app trg() postgres
;\tdepends on: 6
219; 1259 16410 TABLE app customers postgres
;\tdepends on: 6
218; 1259 16398 TABLE app orders app_owner
;\tdepends on: 6
3391; 0 0 ACL app TABLE orders app_owner
;\tdepends on: 218
217; 1259 16397 SEQUENCE app orders_id_seq app_owner
;\tdepends on: 218 6
220; 1259 16415 VIEW app v postgres
;\tdepends on: 218 218 218 6
216; 1259 16388 TABLE public customers postgres
215; 1259 16387 SEQUENCE public customers_id_seq postgres
;\tdepends on: 216
3393; 0 0 SEQUENCE OWNED BY public customers_id_seq postgres
;\tdepends on: 215
221; 1259 16421 TABLE public parted postgres
222; 1259 16424 TABLE public parted_1 postgres
;\tdepends on: 221
3220; 0 0 TABLE ATTACH public parted_1 postgres
;\tdepends on: 222 221
3221; 2604 16391 DEFAULT public customers id postgres
;\tdepends on: 215 216 216
3381; 0 16410 TABLE DATA app customers postgres
;\tdepends on: 219
3380; 0 16398 TABLE DATA app orders app_owner
;\tdepends on: 218
3378; 0 16388 TABLE DATA public customers postgres
;\tdepends on: 216
3382; 0 16424 TABLE DATA public parted_1 postgres
;\tdepends on: 222
3394; 0 0 SEQUENCE SET app orders_id_seq app_owner
;\tdepends on: 217
3395; 0 0 SEQUENCE SET public customers_id_seq postgres
;\tdepends on: 215
3228; 2606 16414 CONSTRAINT app customers customers_pkey postgres
;\tdepends on: 219
3226; 2606 16404 CONSTRAINT app orders orders_pkey app_owner
;\tdepends on: 218
3224; 2606 16395 CONSTRAINT public customers customers_pkey postgres
;\tdepends on: 216
3229; 1259 16427 INDEX public parted_id_idx postgres
;\tdepends on: 221
3230; 1259 16428 INDEX public parted_1_id_idx postgres
;\tdepends on: 222 222 3229
3231; 0 0 INDEX ATTACH public parted_1_id_idx postgres
;\tdepends on: 3230 3229 222 221
3233; 2620 16420 TRIGGER app orders t app_owner
;\tdepends on: 218 223
3232; 2606 16405 FK CONSTRAINT app orders orders_customer_id_fkey app_owner
;\tdepends on: 3224 218 216
";

    #[test]
    fn parses_entries_kinds_names_and_dependencies() {
        let toc = Toc::parse(LISTING);
        assert_eq!(toc.entries.len(), 30);
        let data = toc.get(3380).unwrap();
        assert_eq!((data.kind.as_str(), data.names.as_str()), ("TABLE DATA", "app orders app_owner"));
        assert_eq!(data.dependencies, [218]);
        let owned = toc.get(3393).unwrap();
        assert_eq!(owned.kind, "SEQUENCE OWNED BY");
        assert_eq!(toc.get(3387).unwrap().names, "- ENCODING ");
        assert_eq!(toc.get(3232).unwrap().describe(), "FK CONSTRAINT app orders orders_customer_id_fkey");
        assert!(toc.has_dependencies());
        assert_eq!(toc.tables_named("app", "orders"), [218]);
        assert_eq!(toc.needed(3224), Some((216, Needed::Relation)), "a constraint stands for its table");
        assert_eq!(toc.needed(223), Some((223, Needed::Function)));
        assert_eq!(toc.needed(6), None, "a schema is taken to be there");
    }

    #[test]
    fn owners_are_missing_only_when_no_role_ends_the_line() {
        let toc = Toc::parse(LISTING);
        let roles: HashSet<String> = ["postgres".to_owned()].into();
        assert_eq!(toc.missing_owners(&roles, &|_| true), ["app_owner"]);
        assert_eq!(toc.missing_owners(&roles, &|id| id == 216 || id == 3387 || id == 3390), Vec::<String>::new());
        let roles: HashSet<String> = ["postgres".to_owned(), "app_owner".to_owned()].into();
        assert!(toc.missing_owners(&roles, &|_| true).is_empty());
    }
}
