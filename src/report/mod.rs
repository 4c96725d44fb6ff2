//! The shapes lifeboat reports in: one serde view per kind of thing it tells a user about (a
//! backup, a dump, a verification, an expire run, the WAL archive, a restore plan and result, the catalog, the
//! audit trail). The CLI prints them with `--json` and renders its text from them; the daemon
//! will serve the same documents.
//!
//! Every document printed on its own carries `"schema": "<kind>/<version>"` first. Within a
//! version, fields are only ever added; a field that changes meaning or goes away means a new
//! version. docs/json.md documents every field; the snapshot tests pin them.

pub mod audit;
pub mod backup;
pub mod catalog;
pub mod copy;
pub mod diff;
pub mod expire;
pub mod lint;
pub mod migrate;
pub mod rehearse;
pub mod repository;
pub mod restore;
pub mod schema;
pub mod seed;
pub mod status;
pub mod verification;
pub mod wal;

use serde::Serialize;

/// A view that can be printed as a document of its own.
pub trait Document: Serialize {
    /// `"backup/1"`: the kind and the version of its shape.
    fn schema(&self) -> &'static str;
}

/// The document as pretty-printed JSON, `schema` first.
pub fn to_json<D: Document>(document: &D) -> String {
    #[derive(Serialize)]
    struct Versioned<'a, D> {
        schema: &'static str,
        #[serde(flatten)]
        body: &'a D,
    }
    serde_json::to_string_pretty(&Versioned { schema: document.schema(), body: document })
        .expect("a report view serialises (its maps have string keys)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Example {
        name: &'static str,
    }

    impl Document for Example {
        fn schema(&self) -> &'static str {
            "example/1"
        }
    }

    #[test]
    fn the_schema_comes_first() {
        let json = to_json(&Example { name: "x" });
        assert_eq!(json, "{\n  \"schema\": \"example/1\",\n  \"name\": \"x\"\n}");
    }
}
