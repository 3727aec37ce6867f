//! # fulgur
//!
//! The root package: the `fulgur` binary and what it is built from: config (`config`), the
//! order pipeline (`pipeline`: gateway queues, engine thread, journal thread, readers),
//! recovery of a data directory (`recovery`), the HTTP server (`server`), the trading page
//! it serves (`web`, built from `web/` by `build.rs`), the demo market (`demo`), the client
//! of the operator commands (`admin_client`), and the benchmarks it shares with `cargo
//! bench` (`bench`, `pipebench`, `flows`). The matching core is `fulgur-engine`.

pub mod admin_client;
pub mod alloc;
pub mod bench;
pub mod config;
pub mod custody;
pub mod demo;
pub mod flows;
pub mod payoutbench;
pub mod pipebench;
pub mod pipeline;
pub mod recovery;
pub mod server;
pub mod settlebench;
pub mod settlement;
pub mod web;
pub mod wsbench;

// The library's own tests count allocations the way the binary does.
#[cfg(test)]
#[global_allocator]
static TEST_GLOBAL: alloc::CountingMimalloc = alloc::CountingMimalloc;
