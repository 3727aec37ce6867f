//! # fulgur
//!
//! The root package: the `fulgur` binary (CLI, config, wiring) and the code it shares with
//! `cargo bench` (`benches/`): the demo market and the replay benchmarks. The matching core
//! is `fulgur-engine`.

pub mod alloc;
pub mod bench;
pub mod config;
pub mod demo;
pub mod flows;
pub mod pipebench;
pub mod pipeline;
pub mod recovery;
pub mod server;

// The library's own tests count allocations the way the binary does.
#[cfg(test)]
#[global_allocator]
static TEST_GLOBAL: alloc::CountingMimalloc = alloc::CountingMimalloc;
