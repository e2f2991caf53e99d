//! The agent's own log (stderr) through `tracing`: `RUST_LOG` filtering
//! (default `info`), text for people or JSON lines for log collectors.
//! Crates that log through `log` (aya, aya-log) reach the same output.
//!
//! The pipeline's stages run in spans (`observe`, `pipeline`, `enrich`,
//! `correlate`, `sink`, `store`, `ingest`, `chore`) at debug and trace
//! level: off at the default `info`, where each costs one check of the
//! global max level; `RUST_LOG=monitor=debug` shows the per-batch ones,
//! `trace` the per-event ones too.
use std::{io::IsTerminal, sync::OnceLock};

use serde::Deserialize;
use tracing_subscriber::{filter::LevelFilter, EnvFilter};

/// How log lines are written (`--log-format`, `log_format` in the config).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `TIME LEVEL message`, one line each.
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, `fields`
    /// (with `message`), and inside a span (enabled by `RUST_LOG`) `span`
    /// and `spans`.
    Json,
}

/// The format [`init`] installed (None before it ran).
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// A lifecycle line (`monitor: ready: ...`, `monitor: stopped: ...`,
/// `monitor: error: ...`): as is on stderr in text (what scripts and the
/// demo read), an event of its own in JSON so every line stays JSON.
pub fn say(error: bool, line: std::fmt::Arguments) {
    match FORMAT.get() {
        Some(LogFormat::Json) if error => tracing::error!("{line}"),
        Some(LogFormat::Json) => tracing::info!("{line}"),
        _ => eprintln!("{line}"),
    }
}

/// The filter from `RUST_LOG`, `info` when unset.
fn filter() -> EnvFilter {
    EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy()
}

/// Installs the global subscriber (and the `log` bridge); a second call
/// does nothing.
pub fn init(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    let _ = FORMAT.set(format);
    let _ = match format {
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // A line inside a pipeline span (debug/trace, see the README) names
        // it: `span` the innermost, `spans` all, outermost first.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_ansi(false)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_from_config_and_flag() {
        #[derive(Deserialize)]
        struct C {
            log_format: LogFormat,
        }
        let c: C = toml::from_str("log_format = \"json\"").unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(toml::from_str::<C>("log_format = \"xml\"").is_err());
        use clap::ValueEnum;
        assert_eq!(LogFormat::from_str("text", false), Ok(LogFormat::Text));
    }
}
