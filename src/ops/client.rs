//! The control socket's client: sends one [`Request`] to the running
//! `wavault run` of a vault folder and reads its answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use super::proto::{Answer, Request, Response, MAX_PAYLOAD};
use crate::error::{exit, Error, Result};

/// File name of the socket inside the vault folder.
pub const SOCKET: &str = "control.sock";

/// The socket of the vault in `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET)
}

/// How long the client waits for an answer: quick operations, and those
/// that work through the whole vault or derive keys ([`Request::is_long`]).
const QUICK: Duration = Duration::from_secs(60);
const LONG: Duration = Duration::from_secs(3600);

/// Sends `req` (and `payload`, the bytes of a backup to restore) to the
/// `wavault run` holding the vault in `dir`. `Ok(None)` when none listens
/// (no socket, or nobody accepting): the caller does the work itself.
/// An error answer becomes the error with the same exit code.
pub fn call(dir: &Path, req: &Request, payload: &[u8]) -> Result<Option<(Response, Vec<u8>)>> {
    call_with_progress(dir, req, payload, &mut |_| {})
}

/// [`call`], telling `sent` how many payload bytes were written so far.
pub fn call_with_progress(
    dir: &Path,
    req: &Request,
    payload: &[u8],
    sent: &mut dyn FnMut(u64),
) -> Result<Option<(Response, Vec<u8>)>> {
    let Ok(mut s) = UnixStream::connect(socket_path(dir)) else {
        return Ok(None);
    };
    let wait = if req.is_long() { LONG } else { QUICK };
    s.set_read_timeout(Some(wait))
        .map_err(|e| Error::io("control socket", e))?;
    #[derive(serde::Serialize)]
    struct Line<'a> {
        #[serde(flatten)]
        request: &'a Request,
        payload: u64,
    }
    let env = Line {
        request: req,
        payload: payload.len() as u64,
    };
    // The line may hold passphrases: wiped once sent.
    let mut line = Zeroizing::new(
        serde_json::to_vec(&env).map_err(|e| Error::Other(format!("encoding a request: {e}")))?,
    );
    line.push(b'\n');
    let written = s.write_all(&line).and_then(|_| {
        let mut done = 0u64;
        for chunk in payload.chunks(1 << 20) {
            s.write_all(chunk)?;
            done += chunk.len() as u64;
            sent(done);
        }
        s.flush()
    });
    if let Err(e) = written {
        return Err(Error::io(
            "writing to the running wavault's control socket",
            e,
        ));
    }
    let mut r = BufReader::new(&s);
    let mut answer = String::new();
    r.read_line(&mut answer).map_err(|e| {
        Error::io(
            "reading the running wavault's answer (see its log; `wavault status` shows whether it still runs)",
            e,
        )
    })?;
    if answer.is_empty() {
        return Err(Error::Other(
            "the running wavault closed the control socket without an answer (did it stop?)".into(),
        ));
    }
    let a: Answer = serde_json::from_str(&answer)
        .map_err(|e| Error::Other(format!("bad answer from the running wavault: {e}")))?;
    if !a.ok {
        let msg = a.error.unwrap_or_else(|| "unknown error".into());
        return Err(from_code(a.code.unwrap_or(exit::OTHER), msg));
    }
    let data = a
        .data
        .ok_or_else(|| Error::Other("the running wavault answered without data".into()))?;
    if a.payload > MAX_PAYLOAD {
        return Err(Error::Other(format!(
            "the running wavault announced {} bytes, over the {MAX_PAYLOAD}-byte limit",
            a.payload
        )));
    }
    let mut bytes = Vec::with_capacity(a.payload.min(64 << 20) as usize);
    r.take(a.payload)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("reading the answer's data from the running wavault", e))?;
    if bytes.len() as u64 != a.payload {
        return Err(Error::Other(format!(
            "the running wavault sent {} of {} bytes, then closed the socket",
            bytes.len(),
            a.payload
        )));
    }
    Ok(Some((data, bytes)))
}

/// The error for an answer's exit code, so a command exits the same
/// whether the work was done here or by the running `run`. The message is
/// the server's whole message.
pub fn from_code(code: u8, msg: String) -> Error {
    let code = if (exit::OTHER..=exit::UNAVAILABLE).contains(&code) {
        code
    } else {
        exit::OTHER
    };
    Error::Remote { code, msg }
}
