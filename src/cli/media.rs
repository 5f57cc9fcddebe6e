//! `wavault media get BOT MESSAGE_ID -o FILE`: the file of a media message
//! a bot received, downloaded through the bot's connection and verified.

use super::durations::parse_period;
use super::Global;
use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::ops::{Request, Response};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, clap::Subcommand)]
pub enum MediaCommand {
    /// Write the file of a media message a bot received (image, video, audio,
    /// voice note, document, sticker) to FILE, verified against its hashes
    Get(GetArgs),
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    pub bot: BotId,
    /// The message id, as the hook's `message` event names it (`id`)
    #[arg(value_parser = parse_msgid)]
    pub message_id: String,
    /// Where to write the file ("-": standard output); written whole or not at all
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Without a running `wavault run`: the largest file fetched (with one, its --media-max applies)
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = crate::messaging::media::parse_size)]
    pub media_max: u64,
    /// Without a running `wavault run`: how long to wait for the bot to connect
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_period)]
    pub connect_timeout: Duration,
}

fn parse_msgid(s: &str) -> std::result::Result<String, String> {
    crate::messaging::outbox::check_message_id(s).map(|()| s.to_owned())
}

pub fn media(g: &Global, cmd: MediaCommand) -> Result<()> {
    match cmd {
        MediaCommand::Get(args) => get(g, args),
    }
}

fn get(g: &Global, args: GetArgs) -> Result<()> {
    crate::messaging::media::check_limits(args.media_max, None)?;
    let to_stdout = args.output.as_os_str() == "-";
    if !to_stdout {
        check_target(&args.output)?;
    }
    let req = Request::MediaGet {
        bot: args.bot.clone(),
        id: args.message_id.clone(),
    };
    let dir = g.dir()?;
    let bytes = match crate::ops::client::call(&dir, &req, &[])? {
        Some((Response::Media { size, .. }, bytes)) => {
            if bytes.len() as u64 != size {
                return Err(Error::Other(format!(
                    "the running wavault sent {} bytes for a {size}-byte file: nothing written",
                    bytes.len()
                )));
            }
            bytes
        }
        Some(_) => return Err(super::unexpected("media get")),
        None => {
            // No `run`: connect this bot alone for the download.
            let (vault, rt, mut cfg) = super::alone(g)?;
            cfg.media_max = args.media_max;
            rt.block_on(crate::runner::media_once(
                vault,
                cfg,
                &args.bot,
                &args.message_id,
                args.connect_timeout,
            ))?
            .bytes
        }
    };
    if to_stdout {
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes)
            .and_then(|_| out.flush())
            .map_err(|e| Error::io("writing the file to standard output", e))
    } else {
        write_atomically(&args.output, &bytes)
    }
}

/// Refuses a target whose folder does not exist or that is a folder,
/// before anything is downloaded.
fn check_target(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::Usage(format!(
            "-o {}: is a folder; give a file name",
            path.display()
        )));
    }
    let parent = parent_of(path);
    if !parent.is_dir() {
        return Err(Error::Usage(format!(
            "-o {}: the folder {} does not exist",
            path.display(),
            parent.display()
        )));
    }
    Ok(())
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `bytes` to a temporary file next to `path`, syncs it and renames
/// it over `path`: `path` is the whole file or untouched, never half
/// written.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "media".into());
    let tmp = parent_of(path).join(format!(".{name}.wavault-{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("writing {}", path.display()), e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        std::fs::write(&p, b"old").unwrap();
        write_atomically(&p, b"new contents").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new contents");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let e = check_target(&dir.path().join("nope").join("x")).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE);
        assert!(check_target(dir.path()).is_err());
    }
}
