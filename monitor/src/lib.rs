//! `monitor`: an eBPF runtime secret-use monitor.
//!
//! The pipeline, one module a stage:
//! [`sensors`] (programs + maps) -> [`observer`] (ring buffer, decode) ->
//! [`enrich`] (process, descriptor, container) -> [`correlate`] (issuances,
//! fingerprints, rules) -> [`store`] and exporters ([`output`]), driven by
//! [`agent`]; [`query`] answers responders from the store.
//! [`issuance`] reads the records (files, Vault audit, JWT claims), [`api`]
//! is the local control socket, [`metrics`] serves Prometheus metrics and
//! the health check ([`peers`]: their per-peer connection cap), [`watch`]
//! keeps the watched-file set,
//! [`host`] knows the machine, [`check`] is the preflight, [`demo`] the
//! self-contained scenario that fires every rule, [`cli`] the command line,
//! [`logging`] the agent's own log;
//! [`config`] is the configuration file, [`event`] the event shape,
//! [`timefmt`] durations and times.
pub mod agent;
pub mod api;
pub mod check;
pub mod cli;
pub mod config;
pub mod correlate;
pub mod demo;
pub mod enrich;
pub mod event;
pub mod fleet;
pub mod host;
pub mod issuance;
pub mod logging;
pub mod metrics;
pub mod observer;
pub mod output;
pub mod peers;
pub mod query;
pub mod sensors;
pub mod settings;
pub mod store;
#[cfg(test)]
pub(crate) mod testutil;
pub mod timefmt;
pub mod watch;
