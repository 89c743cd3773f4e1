//! The project's event log: every [`Event`] the supervisor emits, one JSON object per line
//! in `events.jsonl` in the project directory (`rcompose events` follows it), with the time.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::Event;

/// One line of `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `waiting`, `started`, `failed`, `oom_killed`, `exited`, `restarting`, `ready`,
    /// `unready`, `unhealthy`, `up`, `warning`, `stopping`, `removed`, `rollout`, `pending`,
    /// `node`, `fault`.
    pub event: String,
    /// The container (`pod-N` or `pod-N/container`), or the pod for `waiting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Host pid (`started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Exit code (`exited`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Why: `OOMKilled`, `killed by SIGTERM`, a probe's failure, what a pod waits for, the
    /// backoff of a restart, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl EventRecord {
    /// The record of `e`, now.
    #[must_use]
    pub fn of(e: &Event) -> Self {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let r = |event: &str, name: Option<&str>| EventRecord {
            time_ms,
            event: event.to_string(),
            name: name.map(ToString::to_string),
            pid: None,
            code: None,
            reason: None,
        };
        match e {
            Event::Waiting { pod, on, condition } => EventRecord {
                reason: Some(format!("waiting for {on} ({condition})")),
                ..r("waiting", Some(pod))
            },
            Event::Started { name, pid } => EventRecord {
                pid: Some(*pid),
                ..r("started", Some(name))
            },
            Event::Failed { name, message } => EventRecord {
                reason: Some(message.clone()),
                ..r("failed", Some(name))
            },
            Event::Exited { name, code, reason } => EventRecord {
                code: Some(*code),
                reason: reason.clone(),
                ..r("exited", Some(name))
            },
            Event::OomKilled { name } => EventRecord {
                reason: Some("memory limit reached".to_string()),
                ..r("oom_killed", Some(name))
            },
            Event::Restarting { name, delay } => EventRecord {
                reason: Some(format!("in {} ms", delay.as_millis())),
                ..r("restarting", Some(name))
            },
            Event::Readiness {
                name,
                ready,
                detail,
            } => EventRecord {
                reason: detail.clone(),
                ..r(if *ready { "ready" } else { "unready" }, Some(name))
            },
            Event::Unhealthy { name, message, .. } => EventRecord {
                reason: Some(message.clone()),
                ..r("unhealthy", Some(name))
            },
            Event::Ready => r("up", None),
            Event::Warning { message } => EventRecord {
                reason: Some(message.clone()),
                ..r("warning", None)
            },
            Event::Stopping { reason } => EventRecord {
                reason: Some(reason.clone()),
                ..r("stopping", None)
            },
            Event::Removed => r("removed", None),
            Event::Pending { name, reason } => EventRecord {
                reason: Some(reason.clone()),
                ..r("pending", Some(name))
            },
            Event::Node { node, action } => EventRecord {
                reason: Some((*action).to_string()),
                ..r("node", Some(node))
            },
            Event::Fault {
                name,
                phase,
                detail,
            } => EventRecord {
                reason: Some(match detail {
                    Some(d) => format!("{phase}: {d}"),
                    None => (*phase).to_string(),
                }),
                ..r("fault", Some(name))
            },
            Event::Rollout {
                pod,
                revision,
                phase,
                detail,
            } => EventRecord {
                reason: Some(match detail {
                    Some(d) => format!("revision {revision} {phase}: {d}"),
                    None => format!("revision {revision} {phase}"),
                }),
                ..r("rollout", Some(pod))
            },
        }
    }

    /// One line for people: `2026-11-26T05:20:01.123Z api-1 exited code=3 (OOMKilled)`.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = format!("{} {}", utc(self.time_ms), self.event);
        if let Some(n) = &self.name {
            out = format!("{} {n} {}", utc(self.time_ms), self.event);
        }
        if let Some(pid) = self.pid {
            out.push_str(&format!(" pid={pid}"));
        }
        if let Some(code) = self.code {
            out.push_str(&format!(" code={code}"));
        }
        if let Some(r) = &self.reason {
            out.push_str(&format!(" ({r})"));
        }
        out
    }
}

/// `time_ms` as an RFC 3339 UTC time with milliseconds.
#[must_use]
pub fn utc(time_ms: u64) -> String {
    let secs = time_ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rest = secs % 86_400;
    // civil date from days since 1970-01-01 (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        time_ms % 1000
    )
}

/// The supervisor's event log (appends; a failed write is dropped, never fatal).
#[derive(Debug, Default)]
pub struct EventLog {
    file: Mutex<Option<File>>,
}

impl EventLog {
    /// Appends to `path` (created).
    #[must_use]
    pub fn open(path: &Path) -> Self {
        let file = File::options().create(true).append(true).open(path).ok();
        EventLog {
            file: Mutex::new(file),
        }
    }

    /// Appends `e`, now, as one line (one write).
    pub fn append(&self, e: &Event) {
        let Ok(mut line) = serde_json::to_vec(&EventRecord::of(e)) else {
            return;
        };
        line.push(b'\n');
        if let Ok(mut guard) = self.file.lock()
            && let Some(f) = guard.as_mut()
        {
            let _ = f.write_all(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc(1_795_669_201_500), "2026-11-26T05:00:01.500Z");
    }

    #[test]
    fn records_read_back_and_print() {
        let e = Event::Exited {
            name: "api-1".into(),
            code: 137,
            reason: Some("OOMKilled".into()),
        };
        let mut r = EventRecord::of(&e);
        r.time_ms = 1_795_669_201_500;
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"time_ms":1795669201500,"event":"exited","name":"api-1","code":137,"reason":"OOMKilled"}"#
        );
        assert_eq!(serde_json::from_str::<EventRecord>(&json).unwrap(), r);
        assert_eq!(
            r.text(),
            "2026-11-26T05:00:01.500Z api-1 exited code=137 (OOMKilled)"
        );
    }

    #[test]
    fn node_and_fault_events_name_what_changed() {
        let node = EventRecord::of(&Event::Node {
            node: "w1".into(),
            action: "down",
        });
        assert_eq!(
            (
                node.event.as_str(),
                node.name.as_deref(),
                node.reason.as_deref()
            ),
            ("node", Some("w1"), Some("down"))
        );
        let added = EventRecord::of(&Event::Fault {
            name: "slow".into(),
            phase: "added",
            detail: Some("latency 150ms on pod/server".into()),
        });
        assert_eq!(
            (
                added.event.as_str(),
                added.name.as_deref(),
                added.reason.as_deref()
            ),
            (
                "fault",
                Some("slow"),
                Some("added: latency 150ms on pod/server")
            )
        );
        let removed = EventRecord::of(&Event::Fault {
            name: "slow".into(),
            phase: "removed",
            detail: None,
        });
        assert_eq!(removed.reason.as_deref(), Some("removed"));
    }
}
