//! A database's schema as `pg_dump --schema-only` prints it, normalised so that two dumps of the
//! same schema compare equal: comments, blank lines, session `SET`s and pg_dump's per-run
//! `\restrict` keys are dropped, and what is left is split into statements. The rehearsal
//! compares the schema before a migration with the schema after its down file, and
//! `migrate diff` compares the schema it generated with the one asked for.

use std::collections::BTreeMap;
use std::fmt;

/// The statements of a dump, in pg_dump's order, each on one line with its whitespace runs
/// collapsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalisedSchema {
    pub statements: Vec<String>,
}

impl NormalisedSchema {
    pub fn from_dump(dump: &str) -> NormalisedSchema {
        let mut statements = Vec::new();
        let mut current = String::new();
        for line in dump.lines() {
            let line = line.trim_end();
            let trimmed = line.trim_start();
            let noise = trimmed.is_empty()
                || trimmed.starts_with("--")
                || (current.is_empty() && is_session_setting(trimmed))
                || trimmed.starts_with("\\restrict")
                || trimmed.starts_with("\\unrestrict");
            if noise {
                continue;
            }
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(&trimmed.split_whitespace().collect::<Vec<_>>().join(" "));
            if trimmed.ends_with(';') {
                statements.push(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() {
            statements.push(current);
        }
        NormalisedSchema { statements }
    }

    /// What `other` has that `self` lacks and the reverse, or `None` when they are the same
    /// schema. Statements are compared as a multiset: pg_dump's order is stable, but an object
    /// dropped and created again may move.
    pub fn difference(&self, other: &NormalisedSchema) -> Option<SchemaDifference> {
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for statement in &self.statements {
            *counts.entry(statement).or_default() += 1;
        }
        for statement in &other.statements {
            *counts.entry(statement).or_default() -= 1;
        }
        let only_before = self.statements.iter().filter(|s| counts[s.as_str()] > 0).cloned().collect::<Vec<_>>();
        let only_after = other.statements.iter().filter(|s| counts[s.as_str()] < 0).cloned().collect::<Vec<_>>();
        if only_before.is_empty() && only_after.is_empty() {
            None
        } else {
            Some(SchemaDifference { missing: dedup(only_before), extra: dedup(only_after) })
        }
    }
}

/// `SET statement_timeout = 0;`, `SELECT pg_catalog.set_config('search_path', '', false);`:
/// pg_dump's preamble, which says nothing about the schema.
fn is_session_setting(line: &str) -> bool {
    line.starts_with("SET ") || line.starts_with("SELECT pg_catalog.set_config(")
}

fn dedup(mut statements: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    statements.retain(|statement| seen.insert(statement.clone()));
    statements
}

/// Two schemas that differ: the statements of the first that the second lacks (`missing`), and
/// those only the second has (`extra`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaDifference {
    pub missing: Vec<String>,
    pub extra: Vec<String>,
}

/// One statement per line, `-` for missing and `+` for extra, as a diff reads.
impl fmt::Display for SchemaDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for statement in &self.missing {
            writeln!(f, "- {statement}")?;
        }
        for statement in &self.extra {
            writeln!(f, "+ {statement}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\\restrict AbC123\n\nSET statement_timeout = 0;\n\
                        SELECT pg_catalog.set_config('search_path', '', false);\n\nCREATE TABLE public.orders (\n    \
                        id bigint NOT NULL,\n    status text\n);\n\n-- Name: orders_status\nCREATE INDEX orders_status \
                        ON public.orders USING btree (status);\n\\unrestrict AbC123\n";

    #[test]
    fn noise_is_dropped_and_statements_are_one_line_each() {
        let schema = NormalisedSchema::from_dump(DUMP);
        assert_eq!(
            schema.statements,
            [
                "CREATE TABLE public.orders ( id bigint NOT NULL, status text );",
                "CREATE INDEX orders_status ON public.orders USING btree (status);",
            ]
        );
        let other_run = DUMP.replace("AbC123", "XyZ789");
        assert_eq!(schema.difference(&NormalisedSchema::from_dump(&other_run)), None);
    }

    #[test]
    fn a_forgotten_index_is_named_as_extra() {
        let before = NormalisedSchema::from_dump(
            &DUMP.replace("CREATE INDEX orders_status ON public.orders USING btree (status);\n", ""),
        );
        let after = NormalisedSchema::from_dump(DUMP);
        let difference = before.difference(&after).expect("the schemas differ");
        assert!(difference.missing.is_empty());
        assert_eq!(difference.extra, ["CREATE INDEX orders_status ON public.orders USING btree (status);"]);
        assert_eq!(difference.to_string(), "+ CREATE INDEX orders_status ON public.orders USING btree (status);\n");
    }
}
