//! `wavault completions SHELL` and `wavault man [--out DIR]`: shell
//! completions and man pages generated from the clap definition
//! ([`Cli::command`]), so they cannot drift from the real command line;
//! `wavault openapi`: the HTTP API's document (checked against real
//! answers by the e2e tests). None opens a vault or asks for a passphrase.

use super::Cli;
use crate::error::{Error, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate the completion script for
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write wavault.1 and one page per subcommand (wavault-run.1,
    /// wavault-bot-add.1, ...) into DIR (created if missing) instead of
    /// printing the main page on stdout
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// The binary's name, as completions and man pages call it.
const BIN: &str = "wavault";

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(args: &CompletionsArgs) -> Result<()> {
    let mut buf = Vec::new();
    // Rendered into memory first: clap_complete panics on a failed write
    // (e.g. a closed pipe), a buffer cannot fail.
    clap_complete::generate(args.shell, &mut Cli::command(), BIN, &mut buf);
    to_stdout(&buf)
}

/// Prints the OpenAPI document ([`crate::web::openapi`]).
pub fn openapi() -> Result<()> {
    to_stdout(crate::web::openapi().as_bytes())
}

/// Prints the main man page, or writes every page into `args.out`.
pub fn man(args: &ManArgs) -> Result<()> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Gives every subcommand its display name ("wavault-bot-add"), which
    // names its page and its title.
    cmd.build();
    match &args.out {
        None => to_stdout(&page(cmd)?),
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            let mut written = Vec::new();
            write_pages(cmd, dir, &mut written)?;
            written.sort();
            for p in &written {
                println!("{}", p.display());
            }
            Ok(())
        }
    }
}

/// The roff page of a (sub)command, with wavault's name and version in the
/// footer.
fn page(cmd: clap::Command) -> Result<Vec<u8>> {
    let title = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut buf)
        .map_err(|e| Error::io("rendering the man page", e))?;
    // clap_mangen writes the `.TH` line with an unquoted empty date, which
    // shifts the footer and the manual name one field left; write it whole.
    let text = String::from_utf8_lossy(&buf);
    let th = format!(
        ".TH {title} 1 \"\" \"{BIN} {}\" \"{BIN} manual\"",
        env!("CARGO_PKG_VERSION")
    );
    let fixed: Vec<&str> = text
        .lines()
        .map(|l| {
            if l.starts_with(".TH ") {
                th.as_str()
            } else {
                l
            }
        })
        .collect();
    Ok((fixed.join("\n") + "\n").into_bytes())
}

fn write_pages(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir, written)?;
    }
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page(cmd)?)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    written.push(path);
    Ok(())
}

/// Writes to stdout; a reader that went away (`wavault man | head`) is not an error.
fn to_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("writing to stdout", e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_generates_a_script_naming_every_subcommand() {
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|s| s.get_name().to_owned())
            .collect();
        assert!(names.iter().any(|n| n == "run"));
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), BIN, &mut buf);
            let script = String::from_utf8(buf).expect("utf-8 script");
            for n in &names {
                assert!(script.contains(n.as_str()), "{shell}: no `{n}`");
            }
        }
    }

    #[test]
    fn man_pages_cover_nested_subcommands() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("man1");
        man(&ManArgs {
            out: Some(dir.clone()),
        })
        .expect("man --out");
        for f in [
            "wavault.1",
            "wavault-run.1",
            "wavault-bot-add.1",
            "wavault-rotate-key.1",
        ] {
            let text = std::fs::read_to_string(dir.join(f)).expect(f);
            let title = text
                .lines()
                .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
                .unwrap_or_default();
            let name = f.trim_end_matches(".1");
            assert!(
                title.starts_with(&format!(".TH {name} 1 ")),
                "{f}: title line {title:?}"
            );
        }
        assert!(!dir.join("wavault-help.1").exists(), "no page for `help`");
    }
}
