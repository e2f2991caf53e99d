//! Exporters: JSON-lines sinks for events (and, later, alerts).
use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::Path,
};

use anyhow::{Context, Result};
use serde::Serialize;

pub mod feed;
pub mod file;
pub mod ocsf;
pub mod syslog;
pub mod webhook;

/// One JSON object a line, to stdout (`-`) or appended to a file.
pub struct JsonLines {
    out: BufWriter<Box<dyn Write + Send>>,
    pub written: u64,
}

impl JsonLines {
    pub fn open(target: &str) -> Result<Self> {
        let w: Box<dyn Write + Send> = if target == "-" {
            Box::new(io::stdout())
        } else {
            let p = Path::new(target);
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let f: File = OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {target}"))?;
            Box::new(f)
        };
        Ok(Self {
            out: BufWriter::with_capacity(64 * 1024, w),
            written: 0,
        })
    }

    pub fn write<T: Serialize>(&mut self, v: &T) -> Result<()> {
        serde_json::to_writer(&mut self.out, v)?;
        self.out.write_all(b"\n")?;
        self.written += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}
