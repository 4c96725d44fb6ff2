//! Splitting a script into statements with squawk's PostgreSQL parser, so semicolons inside
//! dollar-quoted bodies, strings, quoted identifiers, comments and `BEGIN ATOMIC ... END` bodies
//! do not end a statement.
//!
//! The statements are taken from the top-level elements of the parse tree rather than from its
//! statement nodes alone: when the parser does not understand part of a statement it leaves that
//! part as an error node beside the statement, and every top-level element up to the next `;`
//! belongs to the same statement, so nothing in the file is dropped. A statement's text runs from
//! its first token to its last, without the `;` that ends it and without the comments around it;
//! `;` alone is no statement.

use squawk_syntax::{SourceFile, SyntaxElement, SyntaxKind};

use super::Statement;

/// The statements of `text` and the parser's complaints ("line L, column C: message").
pub fn split(text: &str) -> (Vec<Statement>, Vec<String>) {
    split_from(text, 1)
}

/// [`split`] for text that starts at line `first_line` of its file (a dbmate section).
pub(super) fn split_from(text: &str, first_line: u32) -> (Vec<Statement>, Vec<String>) {
    let parse = SourceFile::parse(text);
    let mut statements = Vec::new();
    // Byte range of the statement being gathered, up to its last non-trivia element.
    let mut open: Option<(usize, usize)> = None;
    let mut close = |open: &mut Option<(usize, usize)>| {
        if let Some((start, end)) = open.take() {
            let body = text[start..end].trim_end();
            let body = body.strip_suffix(';').unwrap_or(body).trim_end();
            if !body.is_empty() {
                statements.push(Statement { text: body.to_owned(), line: line_of(text, start) + first_line - 1 });
            }
        }
    };
    for element in parse.syntax_node().children_with_tokens() {
        if is_trivia(element.kind()) {
            continue;
        }
        let range = element.text_range();
        let (start, end) = (usize::from(range.start()), usize::from(range.end()));
        open = Some(open.map_or((start, end), |(first, _)| (first, end)));
        if ends_with_semicolon(&element) {
            close(&mut open);
        }
    }
    close(&mut open);
    let errors = parse
        .errors()
        .iter()
        .map(|error| {
            let offset = usize::from(error.range().start());
            let line = line_of(text, offset) + first_line - 1;
            let line_start = text[..offset].rfind('\n').map_or(0, |newline| newline + 1);
            let column = text[line_start..offset].chars().count() + 1;
            format!("line {line}, column {column}: {}", error.message())
        })
        .collect();
    (statements, errors)
}

fn is_trivia(kind: SyntaxKind) -> bool {
    matches!(kind, SyntaxKind::WHITESPACE | SyntaxKind::COMMENT)
}

/// Whether the element's last real token is a `;` (a statement node ends with its own `;`).
fn ends_with_semicolon(element: &SyntaxElement) -> bool {
    match element {
        SyntaxElement::Token(token) => token.kind() == SyntaxKind::SEMICOLON,
        SyntaxElement::Node(node) => {
            let mut token = node.last_token();
            while let Some(current) = token {
                if !is_trivia(current.kind()) {
                    return current.kind() == SyntaxKind::SEMICOLON;
                }
                if current.text_range().start() <= node.text_range().start() {
                    return false;
                }
                token = current.prev_token();
            }
            false
        }
    }
}

/// The 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> u32 {
    text[..offset].bytes().filter(|byte| *byte == b'\n').count() as u32 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<String> {
        let (statements, errors) = split(sql);
        assert!(errors.is_empty(), "{sql}: {errors:?}");
        statements.into_iter().map(|statement| statement.text).collect()
    }

    #[test]
    fn dollar_quoted_function_bodies_stay_whole() {
        let sql = "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n  RETURN 1;\nEND;\n$$;\n\
                   CREATE FUNCTION g() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 2; END; $body$;\n\
                   SELECT 3;";
        let statements = texts(sql);
        assert_eq!(statements.len(), 3, "{statements:?}");
        assert!(statements[0].ends_with("END;\n$$"), "{statements:?}");
        assert!(statements[1].ends_with("END; $body$"), "{statements:?}");
        assert_eq!(statements[2], "SELECT 3");
    }

    #[test]
    fn do_blocks_stay_whole() {
        let statements =
            texts("DO $$ BEGIN PERFORM 1; PERFORM 2; END $$;\nDO LANGUAGE plpgsql $x$ BEGIN NULL; END $x$;");
        assert_eq!(
            statements,
            ["DO $$ BEGIN PERFORM 1; PERFORM 2; END $$", "DO LANGUAGE plpgsql $x$ BEGIN NULL; END $x$"]
        );
    }

    #[test]
    fn semicolons_in_single_quoted_strings_do_not_split() {
        let statements = texts("INSERT INTO t VALUES ('a;b', 'it''s; fine');\nSELECT ';'");
        assert_eq!(statements, ["INSERT INTO t VALUES ('a;b', 'it''s; fine')", "SELECT ';'"]);
    }

    #[test]
    fn semicolons_in_escape_strings_do_not_split() {
        let statements = texts(r"SELECT E'a\';b';SELECT E'\\';");
        assert_eq!(statements, [r"SELECT E'a\';b'", r"SELECT E'\\'"]);
    }

    #[test]
    fn semicolons_in_quoted_identifiers_do_not_split() {
        let statements = texts("CREATE TABLE \"odd;name\" (\"a;b\" int);\nSELECT 1;");
        assert_eq!(statements, ["CREATE TABLE \"odd;name\" (\"a;b\" int)", "SELECT 1"]);
    }

    #[test]
    fn semicolons_in_line_and_nested_block_comments_do_not_split() {
        let sql = "-- first; comment\nSELECT 1; -- trailing; comment\n/* outer; /* nested; */ still; */\nSELECT 2;\n-- the end;";
        let (statements, errors) = split(sql);
        assert!(errors.is_empty(), "{errors:?}");
        let found: Vec<(&str, u32)> = statements.iter().map(|s| (s.text.as_str(), s.line)).collect();
        assert_eq!(found, [("SELECT 1", 2), ("SELECT 2", 4)]);
    }

    #[test]
    fn begin_atomic_function_bodies_stay_whole() {
        let sql = "CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT a + b;\n  \
                   SELECT a;\nEND;\nSELECT add(1, 2);";
        let statements = texts(sql);
        assert_eq!(statements.len(), 2, "{statements:?}");
        assert!(statements[0].starts_with("CREATE FUNCTION add") && statements[0].ends_with("SELECT a;\nEND"));
        assert_eq!(statements[1], "SELECT add(1, 2)");
    }

    #[test]
    fn create_index_concurrently_is_one_statement() {
        let (statements, errors) = split("\n\nCREATE INDEX CONCURRENTLY accounts_email ON accounts (email)\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            statements,
            [Statement { text: "CREATE INDEX CONCURRENTLY accounts_email ON accounts (email)".to_owned(), line: 3 }]
        );
    }

    #[test]
    fn a_file_with_every_case_splits_at_the_right_places() {
        let sql = "-- lifeboat:no-transaction\n\
                   CREATE TABLE \"a;b\" (id int, note text DEFAULT 'x;y');\n\
                   /* a /* nested; */ comment; */\n\
                   CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $fn$ BEGIN RETURN 'a;b'; END $fn$;\n\
                   CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;\n\
                   DO $$ BEGIN INSERT INTO \"a;b\" VALUES (1, E'it\\'s;'); END $$;\n\
                   INSERT INTO \"a;b\" VALUES (2, 'semi;colon'); -- trailing; comment\n\
                   CREATE INDEX CONCURRENTLY a_id ON \"a;b\" (id)";
        let (statements, errors) = split(sql);
        assert!(errors.is_empty(), "{errors:?}");
        let lines: Vec<u32> = statements.iter().map(|s| s.line).collect();
        assert_eq!(lines, [2, 4, 5, 6, 7, 8]);
        let starts: Vec<&str> = statements.iter().map(|s| &s.text[..s.text.find(' ').unwrap()]).collect();
        assert_eq!(starts, ["CREATE", "CREATE", "CREATE", "DO", "INSERT", "CREATE"]);
        assert!(statements[1].text.ends_with("END $fn$"));
        assert!(statements[2].text.ends_with("SELECT 2; END"));
        assert!(statements[3].text.ends_with("END $$"));
        assert_eq!(statements[4].text, "INSERT INTO \"a;b\" VALUES (2, 'semi;colon')");
    }

    #[test]
    fn syntax_errors_name_line_and_column_and_keep_the_text() {
        let (statements, errors) = split("SELECT 1;\n  ALTER TABLE t FROBNICATE x;\nSELECT 2;");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("line 2, column 17: "), "{errors:?}");
        let texts: Vec<&str> = statements.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["SELECT 1", "ALTER TABLE t FROBNICATE x", "SELECT 2"]);
    }
}
