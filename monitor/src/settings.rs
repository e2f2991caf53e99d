//! Bounds of every numeric setting, and the checks of paths that must
//! exist. A value outside its bounds is refused with the setting named
//! (config key and flag), never clamped or ignored: the merged options are
//! checked once, before anything is loaded (the README lists the bounds).
use std::path::Path;

use anyhow::{bail, Result};
use monitor_common::{MAX_CAPTURE, MAX_EXEC_DATA, MAX_WRITE_CAPTURE};

use crate::{agent::RunOptions, output::feed::FeedConfig, sensors::SensorOptions};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const TIB: u64 = 1024 * GIB;

/// One numeric setting: its config key, its flag if it has one, and the
/// inclusive range it may take.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub key: &'static str,
    pub flag: Option<&'static str>,
    pub min: u64,
    pub max: u64,
    /// The unit shown in errors ("bytes", "seconds", "").
    pub unit: &'static str,
    /// Why the lower bound, when a smaller value would silently break
    /// something.
    pub why_min: &'static str,
}

pub const CAPTURE_BYTES: Bound = Bound {
    key: "capture_bytes",
    flag: Some("--capture-bytes"),
    min: 1,
    max: MAX_CAPTURE as u64,
    unit: "bytes",
    why_min: "0 captures no payload and turns leak detection off",
};
pub const CAPTURE_WRITE_BYTES: Bound = Bound {
    key: "capture_write_bytes",
    flag: None,
    min: 1,
    max: MAX_WRITE_CAPTURE as u64,
    unit: "bytes",
    why_min: "",
};
pub const ARGV_BYTES: Bound = Bound {
    key: "argv_bytes",
    flag: None,
    min: 64,
    max: MAX_EXEC_DATA as u64 / 2,
    unit: "bytes",
    why_min: "less hides the arguments that leak secrets",
};
pub const ENV_BYTES: Bound = Bound {
    key: "env_bytes",
    flag: None,
    min: 64,
    max: MAX_EXEC_DATA as u64 / 2,
    unit: "bytes",
    why_min: "less hides the environment that propagates secrets",
};
pub const RING_BYTES: Bound = Bound {
    key: "ring_bytes",
    flag: Some("--ring-bytes"),
    min: 64 * KIB,
    max: GIB,
    unit: "bytes",
    why_min: "the kernel ring buffer needs at least 64 KiB",
};
/// Full captures (`capture_bytes` of data with the record's header) a
/// second per tracked process; 0: no limit.
pub const CAPTURE_RATE: Bound = Bound {
    key: "capture_rate",
    flag: None,
    min: 0,
    max: 1_000_000,
    unit: "full captures a second",
    why_min: "",
};
/// Full captures a tracked process may burst (see
/// [`capture_burst_warning`] for one larger than the ring).
pub const CAPTURE_BURST: Bound = Bound {
    key: "capture_burst",
    flag: None,
    min: 1,
    max: 10_000_000,
    unit: "full captures",
    why_min: "0 would leave no room for a single captured write",
};
pub const AGGREGATE_WINDOW: Bound = Bound {
    key: "aggregate_window_seconds",
    flag: None,
    min: 1,
    max: 86_400,
    unit: "seconds",
    why_min: "",
};
pub const ALERT_RATE_LIMIT: Bound = Bound {
    key: "alert_rate_limit",
    flag: None,
    min: 0,
    max: 1_000_000,
    unit: "",
    why_min: "",
};
pub const ALERT_RATE_SECONDS: Bound = Bound {
    key: "alert_rate_seconds",
    flag: None,
    min: 1,
    max: 86_400,
    unit: "seconds",
    why_min: "",
};
pub const RETENTION_MAX_AGE: Bound = Bound {
    key: "retention_max_age",
    flag: None,
    min: 60,
    max: 3650 * 86_400,
    unit: "seconds",
    why_min: "less would delete alerts as soon as they are written",
};
pub const RETENTION_MAX_BYTES: Bound = Bound {
    key: "retention_max_bytes",
    flag: None,
    min: MIB,
    max: 64 * TIB,
    unit: "bytes",
    why_min: "",
};
pub const FILE_FEED_MAX_BYTES: Bound = Bound {
    key: "feeds.max_bytes",
    flag: None,
    min: 4 * KIB,
    max: TIB,
    unit: "bytes",
    why_min: "",
};
pub const FILE_FEED_KEEP: Bound = Bound {
    key: "feeds.keep",
    flag: None,
    min: 0,
    max: 1000,
    unit: "",
    why_min: "",
};
pub const WEBHOOK_BATCH: Bound = Bound {
    key: "feeds.batch_size",
    flag: None,
    min: 1,
    max: 10_000,
    unit: "",
    why_min: "",
};
pub const WEBHOOK_TIMEOUT: Bound = Bound {
    key: "feeds.timeout_seconds",
    flag: None,
    min: 1,
    max: 600,
    unit: "seconds",
    why_min: "",
};
pub const WEBHOOK_SPOOL: Bound = Bound {
    key: "feeds.max_spool_bytes",
    flag: None,
    min: MIB,
    max: TIB,
    unit: "bytes",
    why_min: "",
};

/// Every bound, for the README and tests.
pub const ALL: &[Bound] = &[
    CAPTURE_BYTES,
    CAPTURE_WRITE_BYTES,
    ARGV_BYTES,
    ENV_BYTES,
    RING_BYTES,
    CAPTURE_RATE,
    CAPTURE_BURST,
    AGGREGATE_WINDOW,
    ALERT_RATE_LIMIT,
    ALERT_RATE_SECONDS,
    RETENTION_MAX_AGE,
    RETENTION_MAX_BYTES,
    FILE_FEED_MAX_BYTES,
    FILE_FEED_KEEP,
    WEBHOOK_BATCH,
    WEBHOOK_TIMEOUT,
    WEBHOOK_SPOOL,
];

impl Bound {
    /// `capture_bytes (--capture-bytes)` or `argv_bytes`.
    pub fn name(&self) -> String {
        match self.flag {
            Some(f) => format!("{} ({f})", self.key),
            None => self.key.to_string(),
        }
    }

    /// `Ok` inside the bounds, else a sentence naming the setting.
    pub fn check(&self, value: u64) -> Result<()> {
        if (self.min..=self.max).contains(&value) {
            return Ok(());
        }
        let unit = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", self.unit)
        };
        let why = if value < self.min && !self.why_min.is_empty() {
            format!(" ({})", self.why_min)
        } else {
            String::new()
        };
        bail!(
            "setting {} is {value}{unit}; it must be from {} to {}{unit}{why}",
            self.name(),
            self.min,
            self.max
        )
    }
}

/// The kernel-side numbers (also what `monitor check` loads with).
pub fn check_sensors(s: &SensorOptions) -> Result<()> {
    CAPTURE_BYTES.check(s.capture_bytes.into())?;
    CAPTURE_WRITE_BYTES.check(s.capture_write_bytes.into())?;
    ARGV_BYTES.check(s.argv_bytes.into())?;
    ENV_BYTES.check(s.env_bytes.into())?;
    RING_BYTES.check(s.ring_bytes.into())?;
    CAPTURE_RATE.check(s.capture_rate.into())?;
    CAPTURE_BURST.check(s.capture_burst.into())?;
    Ok(())
}

/// A `capture_burst` whose bytes exceed the ring buffer: one holder
/// bursting large writes within its budget can fill the ring, and every
/// other process's events are lost until the agent drains it (the default
/// is half the ring). Allowed (an operator may trust a fast agent), but
/// said at start and by `monitor check`.
pub fn capture_burst_warning(s: &SensorOptions) -> Option<String> {
    use crate::sensors::{default_capture_burst, full_capture_bytes, ring_size};
    if s.capture_rate == 0 {
        // No budget at all: the burst is unused.
        return None;
    }
    let full = full_capture_bytes(s.capture_bytes);
    let bytes = s.capture_burst as u64 * full;
    let ring = ring_size(s.ring_bytes);
    if bytes <= ring {
        return None;
    }
    Some(format!(
        "setting capture_burst is {} full captures of {full} bytes each (capture_bytes {} \
         and a {} byte record header): {:.1} MiB, more than the {:.1} MiB ring buffer \
         (ring_bytes {}); one holder bursting large writes within its budget can fill the \
         ring, and every other process's events are then lost until the agent drains it. \
         Leave capture_burst unset for the default ({}, half the ring) or raise ring_bytes",
        s.capture_burst,
        s.capture_bytes,
        monitor_common::CAPTURE_RECORD_OVERHEAD,
        bytes as f64 / MIB as f64,
        ring as f64 / MIB as f64,
        s.ring_bytes,
        default_capture_burst(s.capture_rate, s.ring_bytes, s.capture_bytes),
    ))
}

/// Paths of this machine the kernel side needs: an explicit `libc` or
/// `btf` must exist (the default BTF may be missing: file and socket
/// details are then off, with a warning).
pub fn check_sensor_paths(s: &SensorOptions) -> Result<()> {
    if let Some(libc) = &s.libc {
        must_be_file("libc", libc)?;
    }
    if s.btf_path != SensorOptions::default().btf_path {
        must_be_file("btf", &s.btf_path)?;
    }
    Ok(())
}

/// Paths of this machine `monitor run` needs, checked before it starts.
pub fn check_run_paths(o: &RunOptions) -> Result<()> {
    check_sensor_paths(&o.sensors)?;
    check_host_proc(&o.host_proc)
}

/// Every number of `monitor run`, merged from flags, config and defaults.
pub fn check_run(o: &RunOptions) -> Result<()> {
    check_sensors(&o.sensors)?;
    AGGREGATE_WINDOW.check(o.aggregate_window.as_secs())?;
    ALERT_RATE_LIMIT.check(o.rate_limit.max.into())?;
    ALERT_RATE_SECONDS.check(o.rate_limit.per.as_secs())?;
    if let Some(age) = o.retention.max_age {
        RETENTION_MAX_AGE.check(age.as_secs())?;
    }
    if let Some(b) = o.retention.max_bytes {
        RETENTION_MAX_BYTES.check(b)?;
    }
    for f in &o.feeds {
        match f {
            FeedConfig::File(c) => {
                FILE_FEED_MAX_BYTES.check(c.max_bytes)?;
                FILE_FEED_KEEP.check(c.keep.into())?;
            }
            FeedConfig::Webhook(c) => {
                if let Some(b) = c.batch_size {
                    WEBHOOK_BATCH.check(b as u64)?;
                }
                if let Some(t) = c.timeout_seconds {
                    WEBHOOK_TIMEOUT.check(t)?;
                }
                if let Some(s) = c.max_spool_bytes {
                    WEBHOOK_SPOOL.check(s)?;
                }
            }
            FeedConfig::Syslog(_) => {}
        }
    }
    Ok(())
}

/// `host_proc` must be a mounted proc filesystem (it has `stat` and `1/`).
pub fn check_host_proc(p: &Path) -> Result<()> {
    if !p.is_dir() {
        bail!(
            "setting host_proc (--host-proc) is {}, which is not a directory",
            p.display()
        );
    }
    if !p.join("stat").is_file() || !p.join("1").is_dir() {
        bail!(
            "setting host_proc (--host-proc) is {}, which is not a proc filesystem (no stat, no 1/)",
            p.display()
        );
    }
    Ok(())
}

fn must_be_file(key: &str, p: &Path) -> Result<()> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => bail!("setting {key} is {}, which is not a file", p.display()),
        Err(e) => bail!(
            "setting {key} is {}, which cannot be read: {e}",
            p.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_name_the_setting() {
        let e = RING_BYTES.check(4_294_967_295).unwrap_err().to_string();
        assert!(e.contains("ring_bytes (--ring-bytes)"), "{e}");
        assert!(e.contains("4294967295"), "{e}");
        let e = RING_BYTES.check(3).unwrap_err().to_string();
        assert!(e.contains("at least 64 KiB"), "{e}");
        let e = CAPTURE_BYTES.check(0).unwrap_err().to_string();
        assert!(e.contains("capture_bytes (--capture-bytes) is 0"), "{e}");
        assert!(e.contains("leak detection off"), "{e}");
        assert!(CAPTURE_BYTES.check(999_999).is_err());
        assert!(CAPTURE_BYTES.check(4096).is_ok());
        assert!(CAPTURE_BYTES.check(1).is_ok());
        let e = ARGV_BYTES.check(0).unwrap_err().to_string();
        assert!(e.starts_with("setting argv_bytes is 0 bytes"), "{e}");
        let e = CAPTURE_WRITE_BYTES.check(262_145).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "setting capture_write_bytes is 262145 bytes; it must be from 1 to 262144"
            ),
            "{e}"
        );
        let e = check_sensors(&SensorOptions {
            capture_write_bytes: 0,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("capture_write_bytes is 0"), "{e}");
        // The capture budget: a rate of 0 is "no limit", a burst of 0 is
        // refused (it used to become 1 silently).
        assert!(CAPTURE_RATE.check(0).is_ok());
        let e = CAPTURE_RATE.check(4_000_000_000).unwrap_err().to_string();
        assert!(
            e.starts_with("setting capture_rate is 4000000000 full captures a second;"),
            "{e}"
        );
        let e = check_sensors(&SensorOptions {
            capture_burst: 0,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "setting capture_burst is 0 full captures; it must be from 1 to 10000000 \
                 full captures"
            ),
            "{e}"
        );
        assert!(e.contains("no room for a single captured write"), "{e}");
        let e = check_sensors(&SensorOptions {
            capture_rate: 2_000_000,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("setting capture_rate is 2000000 full captures a second;"),
            "{e}"
        );
    }

    #[test]
    fn a_capture_burst_larger_than_the_ring_is_warned_about() {
        // The defaults, a derived burst and one up to the ring: quiet.
        assert_eq!(capture_burst_warning(&SensorOptions::default()), None);
        let fits = SensorOptions {
            // 3949 x 4248 = 16,775,352 bytes <= 16 MiB.
            capture_burst: 3949,
            ..Default::default()
        };
        assert_eq!(capture_burst_warning(&fits), None);
        // The old default (20,000 writes of ~4.2 KB: ~81 MiB): named, with
        // both settings and the way out.
        let old = SensorOptions {
            capture_burst: 20_000,
            ..Default::default()
        };
        let w = capture_burst_warning(&old).expect("no warning for 81 MiB of burst");
        for want in [
            "setting capture_burst is 20000 full captures of 4248 bytes each",
            "capture_bytes 4096",
            "81.0 MiB, more than the 16.0 MiB ring buffer (ring_bytes 16777216)",
            "every other process's events are then lost",
            "default (1974, half the ring) or raise ring_bytes",
        ] {
            assert!(w.contains(want), "want {want:?} in: {w}");
        }
        // Just past the ring; and a larger ring makes room for it.
        let over = SensorOptions {
            capture_burst: 3950,
            ..Default::default()
        };
        assert!(capture_burst_warning(&over).is_some());
        let big_ring = SensorOptions {
            capture_burst: 20_000,
            ring_bytes: 128 << 20,
            ..Default::default()
        };
        assert_eq!(capture_burst_warning(&big_ring), None);
        // Smaller captures are smaller tokens: 20,000 of 252 bytes fit.
        let small = SensorOptions {
            capture_burst: 20_000,
            capture_bytes: 100,
            ..Default::default()
        };
        assert_eq!(capture_burst_warning(&small), None);
        // No limit (capture_rate 0): the burst is unused.
        let unlimited = SensorOptions {
            capture_rate: 0,
            capture_burst: 10_000_000,
            ..Default::default()
        };
        assert_eq!(capture_burst_warning(&unlimited), None);
    }

    #[test]
    fn defaults_are_inside_the_bounds() {
        check_sensors(&SensorOptions::default()).unwrap();
        for b in ALL {
            assert!(b.min <= b.max, "{b:?}");
        }
        // The largest ring still rounds up to a power of two without
        // overflowing.
        assert!((RING_BYTES.max as u32)
            .checked_next_power_of_two()
            .is_some());
    }

    #[test]
    fn missing_paths_are_refused() {
        let e = check_host_proc(Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("host_proc") && e.contains("/nonexistent"), "{e}");
        let e = check_host_proc(Path::new("/etc")).unwrap_err().to_string();
        assert!(e.contains("not a proc filesystem"), "{e}");
        check_host_proc(Path::new("/proc")).unwrap();
        let s = SensorOptions {
            libc: Some("/nonexistent/libc.so.6".into()),
            ..Default::default()
        };
        let e = check_sensor_paths(&s).unwrap_err().to_string();
        assert!(
            e.contains("setting libc") && e.contains("/nonexistent/libc.so.6"),
            "{e}"
        );
    }
}
