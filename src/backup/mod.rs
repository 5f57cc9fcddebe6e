//! Encrypted backup files: the self-contained, versioned stream format ([`stream`]).

pub mod stream;
