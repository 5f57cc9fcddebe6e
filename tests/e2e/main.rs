//! End-to-end tests: the real whatsapp-rust 0.7 client against an
//! in-process WhatsApp server peer, entirely in memory.
//!
//! Why it exists: pairing, login with stored credentials, reconnects and
//! forced logouts are the behaviours wavault is built on, and none of them
//! can be exercised against the real service in CI. One test binary keeps
//! the expensive whatsapp-rust stack linked once; `peer` is the reusable
//! server (see `tests/README.md`), the other modules are the tests.

mod backup_tests;
mod browser_tests;
mod child;
mod claims_tests;
mod contact_tests;
mod events_tests;
mod fault_tests;
mod fleet_tests;
mod group_tests;
mod hook_server;
mod live_tests;
mod log_tests;
mod media_send_tests;
mod media_tests;
mod messaging_tests;
mod move_tests;
mod nats_server;
mod openapi_tests;
#[path = "../support/paired.rs"]
mod paired;
mod pairing_tests;
mod peer;
mod runner_tests;
mod send_tests;
mod signing_tests;
mod snapshot_tests;
mod strict_peer_tests;
mod web_tests;
