//! `monitor`: an eBPF runtime secret-use monitor.
//!
//! The pipeline, one module a stage:
//! [`sensors`] (programs + maps) -> [`observer`] (ring buffer, decode) ->
//! [`enrich`] (process, descriptor, container) -> exporters ([`output`]),
//! driven by [`agent`]. [`watch`] keeps the watched-file set, [`host`] knows
//! the machine, [`check`] is the preflight, [`cli`] the command line.
pub mod agent;
pub mod check;
pub mod cli;
pub mod config;
pub mod enrich;
pub mod event;
pub mod host;
pub mod observer;
pub mod output;
pub mod sensors;
pub mod watch;
