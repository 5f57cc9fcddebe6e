//! Plain-text tables sized to their content: each column as wide as its
//! widest cell (header included), two spaces between columns, the last
//! column not padded, no trailing spaces. No colour or other styling, so
//! the output is the same on a terminal, in a pipe and under `NO_COLOR`.

/// How a column's cells line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Text: starts at the column's offset.
    Left,
    /// Numbers: end at the column's right edge.
    Right,
}

/// A table being filled: rows of cells, rendered by [`Table::render`].
#[derive(Debug, Clone)]
pub struct Table {
    align: Vec<Align>,
    header: Option<Vec<String>>,
    rows: Vec<Vec<String>>,
}

/// Columns between each other.
const GAP: &str = "  ";

impl Table {
    /// A table with a header line: one `(title, alignment)` per column.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            align: columns.iter().map(|&(_, a)| a).collect(),
            header: Some(columns.iter().map(|&(h, _)| h.to_owned()).collect()),
            rows: Vec::new(),
        }
    }

    /// A table without a header line.
    pub fn headless(align: &[Align]) -> Self {
        Self {
            align: align.to_vec(),
            header: None,
            rows: Vec::new(),
        }
    }

    /// Appends a row. Missing cells are empty; extra cells are a bug
    /// (debug assertion) and are dropped.
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut r: Vec<String> = cells.into_iter().map(Into::into).collect();
        debug_assert!(r.len() <= self.align.len(), "{r:?}");
        r.resize(self.align.len(), String::new());
        self.rows.push(r);
        self
    }

    /// The lines, each ending in `\n`; nothing for a headless table
    /// without rows.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths = vec![0; self.align.len()];
        for r in self.header.iter().chain(&self.rows) {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(width(c));
            }
        }
        let mut out = String::new();
        for r in self.header.iter().chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i > 0 {
                    line.push_str(GAP);
                }
                let pad = " ".repeat(widths[i] - width(c));
                match self.align[i] {
                    Align::Left => {
                        line.push_str(c);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(c);
                    }
                }
            }
            out.push_str(line.trim_end_matches(' '));
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Align::{Left, Right};
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut t = Table::new(&[("BOT", Left), ("N", Right), ("STATUS", Left)]);
        t.row(["a-very-long-bot-id-with-forty-characters", "7", "connected"]);
        t.row(["b", "12345", "disconnected (off)"]);
        assert_eq!(
            t.render(),
            "BOT                                           N  STATUS\n\
             a-very-long-bot-id-with-forty-characters      7  connected\n\
             b                                         12345  disconnected (off)\n"
        );
    }

    #[test]
    fn the_last_column_is_not_padded_and_no_line_ends_in_spaces() {
        let mut t = Table::new(&[("A", Left), ("LAST", Left)]);
        t.row(["x", "a long last cell"]).row(["yy", ""]);
        let r = t.render();
        assert_eq!(r, "A   LAST\nx   a long last cell\nyy\n");
        // Right-aligned last column: padded on the left only.
        let mut t = Table::new(&[("A", Left), ("COUNT", Right)]);
        t.row(["x", "1"]);
        assert_eq!(t.render(), "A  COUNT\nx      1\n");
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let mut t = Table::new(&[("ERR", Left), ("N", Right)]);
        t.row(["café", "1"]).row(["abcde", "2"]);
        assert_eq!(t.render(), "ERR    N\ncafé   1\nabcde  2\n");
    }

    #[test]
    fn headless_tables_and_missing_cells() {
        let t = Table::headless(&[Left, Right]);
        assert_eq!(t.render(), "");
        let mut t = Table::headless(&[Left, Right, Left]);
        t.row(["long-id", "3", "tail"]).row(["b", "100"]);
        assert_eq!(t.render(), "long-id    3  tail\nb        100\n");
    }

    #[test]
    fn a_header_wider_than_its_cells_sets_the_width() {
        let mut t = Table::new(&[("ATTEMPTS", Right), ("X", Left)]);
        t.row(["0", "y"]);
        assert_eq!(t.render(), "ATTEMPTS  X\n       0  y\n");
    }
}
