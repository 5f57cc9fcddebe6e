//! Process hardening the `wavault` binary applies first thing in `main`,
//! while it is still single-threaded.
//!
//! - The passphrase variables ([`crate::passphrase::ENV_VARS`]) move from
//!   the environment into memory ([`crate::passphrase::stash_env`]), and
//!   their bytes in the process's original environment block, which
//!   `/proc/<pid>/environ` shows and `unsetenv` does not touch, are
//!   overwritten with zeros ([`scrub_environ_block`], Linux).
//! - Core dumps are off: `RLIMIT_CORE` 0 (soft and hard), and on Linux the
//!   process is marked non-dumpable (no core file, no ptrace or
//!   `/proc/<pid>/mem` access by other processes of the same user; root
//!   keeps it).
//!
//! Nothing here is fatal: what could not be done is reported as [`Note`]s,
//! logged once logging is set up.

use crate::passphrase;

/// Something [`at_start`] could not do (or did), to log later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Log at warn (else debug).
    pub warn: bool,
    pub text: String,
}

impl Note {
    fn debug(text: String) -> Self {
        Note { warn: false, text }
    }

    /// Logs the note (after the subscriber is installed).
    pub fn log(&self) {
        if self.warn {
            tracing::warn!("{}", self.text);
        } else {
            tracing::debug!("{}", self.text);
        }
    }
}

/// Everything above, in order: stash and scrub the passphrase variables,
/// then turn core dumps off. Call it first thing in `main`, before any
/// thread or runtime exists.
pub fn at_start() -> Vec<Note> {
    let mut notes = Vec::new();
    let moved = passphrase::stash_env();
    if !moved.is_empty() {
        match scrub_environ_block(&moved) {
            Ok(n) => notes.push(Note::debug(format!(
                "passphrase variables moved out of the environment; {n} entr(y/ies) of the initial environment block scrubbed"
            ))),
            Err(e) => notes.push(Note::debug(format!(
                "passphrase variables moved out of the environment, but the initial environment block could not be scrubbed ({e}); /proc/self/environ may still show them"
            ))),
        }
    }
    notes.extend(disable_core_dumps());
    notes
}

/// Sets `RLIMIT_CORE` to 0 (soft and hard) and, on Linux, marks the process
/// non-dumpable. Returns what failed.
pub fn disable_core_dumps() -> Vec<Note> {
    let mut notes = Vec::new();
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let zero = Rlimit {
            current: Some(0),
            maximum: Some(0),
        };
        if let Err(e) = setrlimit(Resource::Core, zero) {
            // Under the systemd unit the filter refuses the call, and
            // LimitCORE=0 has already done it.
            let now = getrlimit(Resource::Core);
            notes.push(Note {
                warn: now != zero,
                text: format!("could not set RLIMIT_CORE to 0 ({e}); it is {now:?}"),
            });
        }
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{set_dumpable_behavior, DumpableBehavior};
        if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
            notes.push(Note {
                warn: true,
                text: format!("could not mark the process non-dumpable ({e})"),
            });
        }
    }
    notes
}

/// Overwrites the `NAME=value` entries of `names` in the process's initial
/// environment block (the memory between `env_start` and `env_end` of
/// `/proc/self/stat`, which `/proc/self/environ` reads) with zeros, through
/// `/proc/self/mem`. Returns how many entries it overwrote. Only safe to call
/// after the variables are out of `environ` (`std::env::remove_var`): the
/// pointers no longer lead there. Does nothing outside Linux.
pub fn scrub_environ_block(names: &[&str]) -> std::io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::FileExt;
        use zeroize::Zeroizing;
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        let (start, end) = env_bounds(&stat)
            .ok_or_else(|| std::io::Error::other("no env_start/env_end in /proc/self/stat"))?;
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/proc/self/mem")?;
        let len = usize::try_from(end - start).map_err(std::io::Error::other)?;
        let mut block = Zeroizing::new(vec![0u8; len]);
        mem.read_exact_at(&mut block, start)?;
        let ranges = entries_named(&block, names);
        for r in &ranges {
            let zeros = vec![0u8; r.len()];
            mem.write_all_at(&zeros, start + r.start as u64)?;
        }
        Ok(ranges.len())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = names;
        Ok(0)
    }
}

/// `env_start` and `env_end` (fields 50 and 51) of a `/proc/<pid>/stat` line.
fn env_bounds(stat: &str) -> Option<(u64, u64)> {
    // Field 2 (the command name, in parentheses) may hold spaces and ')':
    // the fields after the last ')' start at field 3.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let start = fields.get(50 - 3)?.parse().ok()?;
    let end = fields.get(51 - 3)?.parse().ok()?;
    (start < end).then_some((start, end))
}

/// Byte ranges of the `NAME=value` entries (NUL-separated) whose name is
/// one of `names`.
fn entries_named(block: &[u8], names: &[&str]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    for entry in block.split(|b| *b == 0) {
        let name = entry.split(|b| *b == b'=').next().unwrap_or_default();
        if entry.contains(&b'=') && names.iter().any(|n| n.as_bytes() == name) {
            out.push(at..at + entry.len());
        }
        at += entry.len() + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_the_named_entries() {
        let block = b"PATH=/bin\0WAVAULT_PASSPHRASE=s3cret\0WAVAULT_PASSPHRASE_X=no\0X=WAVAULT_PASSPHRASE=no\0WAVAULT_PASSPHRASE=again\0";
        let r = entries_named(block, &["WAVAULT_PASSPHRASE"]);
        let got: Vec<&[u8]> = r.iter().map(|r| &block[r.clone()]).collect();
        assert_eq!(
            got,
            [
                &b"WAVAULT_PASSPHRASE=s3cret"[..],
                b"WAVAULT_PASSPHRASE=again"
            ]
        );
        assert!(entries_named(b"", &["A"]).is_empty());
        assert!(
            entries_named(b"A", &["A"]).is_empty(),
            "no '=': not an entry"
        );
    }

    #[test]
    fn env_bounds_reads_fields_50_and_51() {
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[50 - 3] = "1000".into();
        fields[51 - 3] = "2000".into();
        let line = format!("42 (a) b (c)) {}\n", fields.join(" "));
        assert_eq!(env_bounds(&line), Some((1000, 2000)));
        assert_eq!(env_bounds("42 (x) S 1 2"), None);
        assert_eq!(env_bounds("no parenthesis"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_env_bounds() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (start, end) = env_bounds(&stat).expect("env_start/env_end");
        assert!(end - start >= std::fs::read("/proc/self/environ").unwrap().len() as u64);
    }
}
