//! Tables sized to their content: with a 40-character bot id and a disabled
//! bot (`disconnected (off)`), every row lines up under its header.

use crate::common::*;

/// 40 characters: longer than any fixed column width wavault used.
const LONG: &str = "ventas-mexico-norte-monterrey-sucursal-1";

#[derive(Clone, Copy, PartialEq)]
enum A {
    /// Cells start where the title starts.
    L,
    /// Cells end where the title ends.
    R,
}

/// The `rows` lines after the header line (the first starting with
/// `columns[0]`), checked against the header: a left-aligned column's cell
/// starts at its title's offset (after a blank), a right-aligned one ends
/// where its title ends (before a blank or the line's end). Returns each
/// row's cells (text between the column's edge and the next two blanks).
fn aligned_cells(out: &str, rows: usize, columns: &[(&str, A)]) -> Vec<Vec<String>> {
    assert!(!out.contains('\x1b'), "no styling: {out:?}");
    let lines: Vec<&str> = out.lines().collect();
    let h = lines
        .iter()
        .position(|l| l.starts_with(columns[0].0))
        .unwrap_or_else(|| panic!("no header line:\n{out}"));
    let header = lines[h];
    let body = &lines[h + 1..];
    assert!(body.len() >= rows, "{rows} rows expected:\n{out}");
    let mut at = 0;
    let offsets: Vec<(usize, usize)> = columns
        .iter()
        .map(|(title, _)| {
            let o = at
                + header[at..]
                    .find(title)
                    .unwrap_or_else(|| panic!("{title} in {header:?}"));
            at = o + title.len();
            (o, at)
        })
        .collect();
    let blank = |l: &[char], i: usize| i >= l.len() || l[i] == ' ';
    body[..rows]
        .iter()
        .map(|row| {
            let l: Vec<char> = row.chars().collect();
            columns
                .iter()
                .zip(&offsets)
                .map(|(&(title, a), &(start, end))| {
                    let ok = match a {
                        A::L => (start == 0 || l[start - 1] == ' ') && !blank(&l, start),
                        A::R => !blank(&l, end - 1) && blank(&l, end),
                    };
                    assert!(
                        ok,
                        "column {title} ({}) is not at {start}..{end} in\n{header}\n{row}\n\n{out}",
                        if a == A::L { "left" } else { "right" }
                    );
                    let s: String = l.iter().collect();
                    match a {
                        A::L => {
                            let rest = &s[start..];
                            rest[..rest.find("  ").unwrap_or(rest.len())].to_owned()
                        }
                        A::R => {
                            let head = &s[..end];
                            head[head.rfind("  ").map_or(0, |i| i + 2)..].to_owned()
                        }
                    }
                })
                .collect()
        })
        .collect()
}

/// A vault with a 40-character bot (disabled) and a short one (disabled too:
/// nothing here may reach WhatsApp).
fn vault(dir: &std::path::Path) {
    crate::cli::init(dir);
    for id in [LONG, "b"] {
        let out = run(wavault(dir).args(["bot", "add", id, "--disabled"]));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
}

fn ok(c: &mut std::process::Command) -> String {
    let out = run(c.env("NO_COLOR", "1"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn tables_line_up_with_long_ids_and_disabled_bots() {
    use A::*;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    vault(dir);

    let out = ok(wavault(dir).args(["bot", "list"]));
    let cells = aligned_cells(&out, 2, &[("BOT", L), ("STATE", L), ("RECORDS", R)]);
    assert_eq!(cells[0][..2], ["b", "disabled"], "{out}");
    assert_eq!(cells[1][..2], [LONG, "disabled"], "{out}");

    let out = ok(wavault(dir).args(["status"]));
    let cols = [
        ("BOT", L),
        ("STATUS", L),
        ("PHONE", L),
        ("LAST ACTIVITY", L),
        ("AUTHENTICATED", L),
        ("ATTEMPTS", R),
        ("IN", R),
        ("OUT", R),
        ("QUEUED", R),
        ("LAST ERROR", L),
    ];
    let cells = aligned_cells(&out, 2, &cols);
    let long = cells.iter().find(|r| r[0] == LONG).expect("the long bot");
    assert_eq!(long[1], "disconnected (off)", "{out}");
    assert_eq!(out.lines().count(), 3, "one row per bot: {out}");

    let out = ok(wavault(dir).args(["stats"]));
    let cols = [
        ("BOT", L),
        ("STATUS", L),
        ("AVAIL", R),
        ("UP", R),
        ("DOWN", R),
        ("UNKNOWN", R),
        ("DROPS", R),
        ("MEAN RC", R),
        ("MAX RC", R),
        ("PAIRS", R),
        ("LOGINS", R),
        ("MSG IN", R),
        ("MSG OUT", R),
    ];
    let cells = aligned_cells(&out, 2, &cols);
    assert!(cells.iter().any(|r| r[0] == LONG), "{out}");
    assert_eq!(out.lines().count(), 3, "one row per bot: {out}");

    // A backup of both, listed by `backup inspect` (cheap KDF).
    let file = dir.join("b.wvb");
    ok(wavault(dir)
        .args(["export", "-o"])
        .arg(&file)
        .env("WAVAULT_BACKUP_PASSPHRASE", "backup pw")
        .args(CHEAP_KDF_ARGS));
    let out = ok(wavault(dir)
        .args(["backup", "inspect"])
        .arg(&file)
        .env("WAVAULT_BACKUP_PASSPHRASE", "backup pw"));
    let cols = [
        ("BOT", L),
        ("RECORDS", R),
        ("BYTES", R),
        ("STATE", L),
        ("CREDENTIALS", L),
    ];
    let cells = aligned_cells(&out, 2, &cols);
    assert!(cells.iter().any(|r| r[0] == LONG), "{out}");

    // `validate`: per-bot lines without a header; the record counts end in
    // the same column.
    let out = ok(wavault(dir).args(["validate"]));
    let ends: Vec<usize> = out
        .lines()
        .filter(|l| l.ends_with("records") || l.contains(" records,"))
        .map(|l| l.find(" records").unwrap())
        .collect();
    assert_eq!(ends.len(), 2, "{out}");
    assert_eq!(ends[0], ends[1], "record counts line up:\n{out}");
}

/// The sweep report's table (rendered by the library: a real sweep needs
/// bots dead for a month), with numbers of different widths.
#[test]
fn sweep_report_lines_up() {
    use wavault::sessions::Status;
    use wavault::sweep::{BotSweep, SweepReport};
    use A::*;
    let b = |bot: &str, status, n: u64| BotSweep {
        bot: bot.into(),
        status,
        credential_records: n,
        credential_bytes: n * 1000,
        history_entries: 1,
        history_bytes: 90,
    };
    let r = SweepReport {
        dry_run: true,
        cutoff: 0,
        bots: vec![
            b(LONG, Status::LoggedOut, 250),
            b("b", Status::Connected, 0),
        ],
        orphan_records: 0,
        orphan_bytes: 0,
        auto_backup: None,
        pruned_backups: Vec::new(),
        rotation_due: false,
        rotated_to_term: None,
        retired_terms: Vec::new(),
    };
    let out = wavault::sweep::table(&r);
    let cells = aligned_cells(
        &out,
        2,
        &[
            ("BOT", L),
            ("STATUS", L),
            ("CREDENTIAL RECORDS", R),
            ("CREDENTIAL BYTES", R),
            ("HISTORY ENTRIES", R),
            ("HISTORY BYTES", R),
        ],
    );
    assert_eq!(
        cells[0][..4],
        [LONG, "logged_out", "250", "250000"],
        "{out}"
    );
    assert_eq!(cells[1][..4], ["b", "connected", "0", "0"], "{out}");
}
