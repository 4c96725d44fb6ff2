//! Text tables (`list`, `key list`, `audit`): plain columns without borders, through comfy-table.

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};

/// A table with `header`, the columns at `right_aligned` (numbers) aligned right, two spaces
/// between columns; rows keep their full width (a pipe to `grep` sees whole lines).
pub fn plain(header: &[&str], right_aligned: &[usize]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for (index, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if right_aligned.contains(&index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// The table as lines without trailing spaces.
pub fn render(table: &Table) -> String {
    table.trim_fmt()
}

/// `text` cut to `room` characters, ending in `…` when cut.
pub fn truncate(text: &str, room: usize) -> String {
    if text.chars().count() <= room {
        text.to_owned()
    } else if room == 0 {
        String::new()
    } else {
        let mut cut: String = text.chars().take(room - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_and_numbers_aligned_right() {
        let mut table = plain(&["NAME", "SIZE"], &[1]);
        table.add_row(vec!["a", "1"]).add_row(vec!["bbbbbb", "1234"]);
        assert_eq!(render(&table), "NAME    SIZE\na          1\nbbbbbb  1234");
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate("abc", 0), "");
    }
}
