//! Encrypted backup files: the stream format ([`stream`]), what goes inside
//! and export/restore/inspect ([`archive`]), and automatic backups before
//! destructive operations ([`auto`]).

pub mod archive;
pub mod auto;
pub mod stream;
