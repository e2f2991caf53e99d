//! The ten rules of the contract, with severity, MITRE ATT&CK techniques and
//! OWASP Non-Human Identities Top 10 (2025) ids.
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A closed set of names (rules, severities) as alerts carry them.
pub trait Name: Copy {
    fn name(self) -> &'static str;
    fn parse(s: &str) -> Option<Self>;
}

impl Name for Severity {
    fn name(self) -> &'static str {
        self.as_str()
    }
    fn parse(s: &str) -> Option<Self> {
        Severity::from_name(s)
    }
}

impl Name for Rule {
    fn name(self) -> &'static str {
        Rule::name(self)
    }
    fn parse(s: &str) -> Option<Self> {
        Rule::from_name(s)
    }
}

/// A rule or severity as an alert names it: one this agent knows, or a
/// name it does not (an alert written by another version, read back from
/// a store or built by hand) kept as written. Written out as the name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Named<T> {
    Known(T),
    Unknown(String),
}

impl<T: Name> Named<T> {
    pub fn as_str(&self) -> &str {
        match self {
            Named::Known(t) => t.name(),
            Named::Unknown(s) => s,
        }
    }

    pub fn known(&self) -> Option<T> {
        match self {
            Named::Known(t) => Some(*t),
            Named::Unknown(_) => None,
        }
    }
}

impl<T: Name> From<T> for Named<T> {
    fn from(t: T) -> Self {
        Named::Known(t)
    }
}

impl<T: Name> From<&str> for Named<T> {
    fn from(s: &str) -> Self {
        match T::parse(s) {
            Some(t) => Named::Known(t),
            None => Named::Unknown(s.to_string()),
        }
    }
}

impl<T: Name + PartialEq> PartialEq<T> for Named<T> {
    fn eq(&self, other: &T) -> bool {
        matches!(self, Named::Known(t) if t == other)
    }
}

impl<T: Name> PartialEq<&str> for Named<T> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl<T: Name> PartialEq<str> for Named<T> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl<T: Name> std::fmt::Display for Named<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<T: Name> Serialize for Named<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de, T: Name> serde::Deserialize<'de> for Named<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Named::from(s.as_ref()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    ReadForeign,
    CopyFile,
    LeakLog,
    LeakArgv,
    EnvPropagated,
    EnvironScrape,
    SendUnexpectedDestination,
    ReplayExpired,
    ReplayForeign,
    HolderEgressUnexpected,
    /// The agent's own: a tracked process lost captured writes (its
    /// capture budget spent, or the ring buffer full) — what it wrote in
    /// that time was not scanned. Not one of the contract's ten.
    CaptureDegraded,
}

/// Rules about the monitor's own coverage, beside the contract's ten.
pub const MONITOR_RULES: [Rule; 1] = [Rule::CaptureDegraded];

pub const ALL_RULES: [Rule; 10] = [
    Rule::ReadForeign,
    Rule::CopyFile,
    Rule::LeakLog,
    Rule::LeakArgv,
    Rule::EnvPropagated,
    Rule::EnvironScrape,
    Rule::SendUnexpectedDestination,
    Rule::ReplayExpired,
    Rule::ReplayForeign,
    Rule::HolderEgressUnexpected,
];

impl Rule {
    /// The contract's rule name.
    pub fn name(self) -> &'static str {
        match self {
            Rule::ReadForeign => "secret.read.foreign",
            Rule::CopyFile => "secret.copy.file",
            Rule::LeakLog => "secret.leak.log",
            Rule::LeakArgv => "secret.leak.argv",
            Rule::EnvPropagated => "secret.env.propagated",
            Rule::EnvironScrape => "secret.environ.scrape",
            Rule::SendUnexpectedDestination => "secret.send.unexpected_destination",
            Rule::ReplayExpired => "secret.replay.expired",
            Rule::ReplayForeign => "secret.replay.foreign",
            Rule::HolderEgressUnexpected => "holder.egress.unexpected",
            Rule::CaptureDegraded => "monitor.capture.degraded",
        }
    }

    pub fn from_name(s: &str) -> Option<Rule> {
        ALL_RULES
            .iter()
            .chain(MONITOR_RULES.iter())
            .copied()
            .find(|r| r.name() == s)
    }

    pub fn severity(self) -> Severity {
        match self {
            Rule::ReadForeign => Severity::High,
            Rule::CopyFile => Severity::High,
            Rule::LeakLog => Severity::High,
            Rule::LeakArgv => Severity::High,
            Rule::EnvPropagated => Severity::Medium,
            Rule::EnvironScrape => Severity::High,
            Rule::SendUnexpectedDestination => Severity::Critical,
            Rule::ReplayExpired => Severity::High,
            Rule::ReplayForeign => Severity::Critical,
            Rule::HolderEgressUnexpected => Severity::Medium,
            Rule::CaptureDegraded => Severity::Medium,
        }
    }

    /// MITRE ATT&CK technique ids.
    pub fn attack(self) -> &'static [&'static str] {
        match self {
            // Unsecured Credentials: Credentials In Files.
            Rule::ReadForeign | Rule::CopyFile | Rule::LeakLog => &["T1552.001"],
            // Unsecured Credentials (command lines are world-readable in /proc).
            Rule::LeakArgv => &["T1552"],
            Rule::EnvPropagated => &["T1552"],
            // OS Credential Dumping: Proc Filesystem.
            Rule::EnvironScrape => &["T1003.007"],
            // Exfiltration Over C2 Channel.
            Rule::SendUnexpectedDestination => &["T1041"],
            // Use Alternate Authentication Material: Application Access Token.
            Rule::ReplayExpired | Rule::ReplayForeign => &["T1550.001"],
            Rule::HolderEgressUnexpected => &["T1041"],
            // Impair Defenses: flooding the sensor to write unseen.
            Rule::CaptureDegraded => &["T1562"],
        }
    }

    /// OWASP NHI Top 10 (2025) ids: NHI1 improper offboarding, NHI2 secret
    /// leakage, NHI5 overprivileged NHI, NHI7 long-lived secrets, NHI8
    /// environment isolation, NHI9 NHI reuse.
    pub fn owasp_nhi(self) -> &'static [&'static str] {
        match self {
            Rule::ReadForeign => &["NHI2", "NHI9"],
            Rule::CopyFile => &["NHI2"],
            Rule::LeakLog => &["NHI2"],
            Rule::LeakArgv => &["NHI2"],
            Rule::EnvPropagated => &["NHI2", "NHI8"],
            Rule::EnvironScrape => &["NHI2"],
            Rule::SendUnexpectedDestination => &["NHI2", "NHI5"],
            Rule::ReplayExpired => &["NHI1", "NHI7"],
            Rule::ReplayForeign => &["NHI9"],
            Rule::HolderEgressUnexpected => &["NHI5"],
            Rule::CaptureDegraded => &["NHI2"],
        }
    }

    /// One line for the alert's `summary` / a finding title.
    pub fn title(self) -> &'static str {
        match self {
            Rule::ReadForeign => "secret file read by a process outside its holder",
            Rule::CopyFile => "secret copied into another file",
            Rule::LeakLog => "secret written to a log, terminal or pipe",
            Rule::LeakArgv => "secret on a command line",
            Rule::EnvPropagated => {
                "secret passed in the environment to a process outside its holder"
            }
            Rule::EnvironScrape => {
                "environment or memory of a secret holder read by another process"
            }
            Rule::SendUnexpectedDestination => "secret sent to a destination it was not issued for",
            Rule::CaptureDegraded => {
                "a secret holder writes faster than its capture budget: writes not scanned"
            }
            Rule::ReplayExpired => "secret used after expiry or revocation",
            Rule::ReplayForeign => "secret sent by a process outside its holder",
            Rule::HolderEgressUnexpected => "secret holder connected to an unexpected destination",
        }
    }
}

/// ATT&CK technique for Kubernetes service-account tokens (Container API).
pub const ATTACK_CONTAINER_API: &str = "T1552.007";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_contracts_and_round_trip() {
        let names: Vec<&str> = ALL_RULES.iter().map(|r| r.name()).collect();
        assert_eq!(
            names,
            [
                "secret.read.foreign",
                "secret.copy.file",
                "secret.leak.log",
                "secret.leak.argv",
                "secret.env.propagated",
                "secret.environ.scrape",
                "secret.send.unexpected_destination",
                "secret.replay.expired",
                "secret.replay.foreign",
                "holder.egress.unexpected",
            ]
        );
        for r in ALL_RULES {
            assert_eq!(Rule::from_name(r.name()), Some(r));
            assert!(!r.attack().is_empty() && !r.owasp_nhi().is_empty());
            assert!(r.attack().iter().all(|t| t.starts_with('T')));
            assert!(r.owasp_nhi().iter().all(|n| {
                n.strip_prefix("NHI")
                    .and_then(|d| d.parse::<u32>().ok())
                    .is_some_and(|d| (1..=10).contains(&d))
            }));
        }
        assert_eq!(Rule::from_name("secret.nope"), None);
    }
}
