//! What a running container uses, read from its cgroup and from /proc: CPU time, memory,
//! pids and the processes in it (`rcompose stats` and `rcompose top`), on cgroup v1 (and
//! hybrid) and v2 hosts.
//!
//! Plain file reads below mount points the caller passes in (see
//! [`super::cgroup::mount_points`]), not cgroups-rs: its `memory_stat` parses every file of
//! the controller, and its handles want the controller list of a cgroup we did not make in
//! this process. Parsing is pure and unit-tested on fixture text of both layouts; this
//! module never writes anything.
//!
//! Memory is reported as `docker stats` does: the charged usage minus the inactive page
//! cache (v1 `memory.usage_in_bytes` - `total_inactive_file` of `memory.stat`; v2
//! `memory.current` - `inactive_file`), so that file pages the kernel can drop at once do
//! not count. CPU % is the growth of the cgroup's CPU time over a wall-clock interval,
//! 100 % being one CPU fully busy.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::cgroup::CgroupVersion;

/// Errors of reading a container's usage.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The cgroup path is not a plain relative path (a damaged state file).
    #[error("invalid cgroup path `{path}`: it must be relative, without `..`")]
    InvalidPath {
        /// The path as found.
        path: String,
    },
    /// A controller rcompose needs is not mounted.
    #[error("the cgroup controller `{controller}` is not mounted (see /proc/self/mountinfo)")]
    NoController {
        /// The controller.
        controller: &'static str,
    },
    /// A cgroup file could not be read.
    #[error("failed to read `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A cgroup file does not hold what the kernel writes there.
    #[error("unexpected content in `{path}`: {problem}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

type Result<T> = std::result::Result<T, StatsError>;

/// v1 reports "no limit" as the largest page-aligned `i64` (0x7FFF_FFFF_FFFF_F000 with 4 KiB
/// pages, less with larger pages): any value from 2^62 on is taken as unlimited.
const UNLIMITED_FROM: u64 = 1 << 62;

/// One reading of a container's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// CPU time used by the cgroup since it was made, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory.
    pub memory: Memory,
    /// Tasks (processes and their threads) in the cgroup: `pids.current`.
    pub pids: u64,
    /// `pids.max`, `None` when unlimited.
    pub pids_limit: Option<u64>,
}

/// Memory of a cgroup, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// What the cgroup is charged (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub charged: u64,
    /// Inactive file pages among them (v1 `total_inactive_file`, v2 `inactive_file`).
    pub inactive_file: u64,
    /// The limit, `None` when unlimited.
    pub limit: Option<u64>,
}

impl Memory {
    /// The usage `docker stats` shows: charged minus inactive file pages (the charge alone
    /// when the statistic is not smaller, as Docker does).
    #[must_use]
    pub fn usage(&self) -> u64 {
        if self.inactive_file < self.charged {
            self.charged - self.inactive_file
        } else {
            self.charged
        }
    }
}

/// CPU % between two readings of a cgroup's CPU time taken `wall` apart: the time used over
/// the time passed, 100 % for one CPU busy all along (200 % for two). `None` when no time
/// passed or the counter went back (the cgroup was made anew meanwhile).
#[must_use]
pub fn cpu_percent(before_ns: u64, after_ns: u64, wall: Duration) -> Option<f64> {
    let wall_ns = wall.as_nanos();
    if wall_ns == 0 || after_ns < before_ns {
        return None;
    }
    // u128 -> f64: exact enough for any realistic interval (2^53 ns is 104 days)
    #[allow(clippy::cast_precision_loss)]
    let percent = (after_ns - before_ns) as f64 / wall_ns as f64 * 100.0;
    Some(percent)
}

/// Reads container cgroups below the given mount points.
#[derive(Debug, Clone)]
pub struct CgroupReader {
    version: CgroupVersion,
    mounts: Vec<(String, PathBuf)>,
}

impl CgroupReader {
    /// A reader for the `version` layout with the mount points `mounts` (as
    /// [`super::cgroup::mount_points`] returns them: `(controller, mount point)`, on v2 one
    /// `unified` entry).
    #[must_use]
    pub fn new(version: CgroupVersion, mounts: Vec<(String, PathBuf)>) -> Self {
        Self { version, mounts }
    }

    /// The directory of `cgroup` in the hierarchy of `controller` (v2: the unified one).
    fn dir(&self, controller: &'static str, cgroup: &str) -> Result<PathBuf> {
        let relative = checked_relative(cgroup)?;
        let wanted = match self.version {
            CgroupVersion::V1 => controller,
            CgroupVersion::V2 => "unified",
        };
        self.mounts
            .iter()
            .find(|(c, _)| c == wanted)
            .map(|(_, mount)| mount.join(relative))
            .ok_or(StatsError::NoController { controller })
    }

    /// Reads the usage of `cgroup` (relative to each hierarchy root, as in `state.json`).
    /// `None` when the cgroup does not exist (the container is not running).
    pub fn usage(&self, cgroup: &str) -> Result<Option<Usage>> {
        match self.version {
            CgroupVersion::V1 => self.usage_v1(cgroup),
            CgroupVersion::V2 => self.usage_v2(cgroup),
        }
    }

    fn usage_v1(&self, cgroup: &str) -> Result<Option<Usage>> {
        let cpu = self.dir("cpuacct", cgroup)?;
        let mem = self.dir("memory", cgroup)?;
        let pids = self.dir("pids", cgroup)?;
        let Some(cpu_ns) = read_number(&cpu, "cpuacct.usage")? else {
            return Ok(None);
        };
        let Some(charged) = read_number(&mem, "memory.usage_in_bytes")? else {
            return Ok(None);
        };
        let Some(limit) = read_limit(&mem, "memory.limit_in_bytes")? else {
            return Ok(None);
        };
        let Some(inactive_file) = read_stat(&mem, "memory.stat", "total_inactive_file")? else {
            return Ok(None);
        };
        let Some(current) = read_number(&pids, "pids.current")? else {
            return Ok(None);
        };
        let Some(pids_limit) = read_limit(&pids, "pids.max")? else {
            return Ok(None);
        };
        Ok(Some(Usage {
            cpu_ns,
            memory: Memory {
                charged,
                inactive_file,
                limit,
            },
            pids: current,
            pids_limit,
        }))
    }

    fn usage_v2(&self, cgroup: &str) -> Result<Option<Usage>> {
        let dir = self.dir("unified", cgroup)?;
        let Some(usage_usec) = read_stat(&dir, "cpu.stat", "usage_usec")? else {
            return Ok(None);
        };
        let Some(charged) = read_number(&dir, "memory.current")? else {
            return Ok(None);
        };
        let Some(limit) = read_limit(&dir, "memory.max")? else {
            return Ok(None);
        };
        let Some(inactive_file) = read_stat(&dir, "memory.stat", "inactive_file")? else {
            return Ok(None);
        };
        let Some(current) = read_number(&dir, "pids.current")? else {
            return Ok(None);
        };
        let Some(pids_limit) = read_limit(&dir, "pids.max")? else {
            return Ok(None);
        };
        Ok(Some(Usage {
            cpu_ns: usage_usec.saturating_mul(1000),
            memory: Memory {
                charged,
                inactive_file,
                limit,
            },
            pids: current,
            pids_limit,
        }))
    }

    /// The host pids of the processes in `cgroup` (its `cgroup.procs`, in the pids hierarchy
    /// on v1), sorted. `None` when the cgroup does not exist.
    pub fn procs(&self, cgroup: &str) -> Result<Option<Vec<i32>>> {
        let dir = self.dir("pids", cgroup)?;
        let Some(text) = read(&dir, "cgroup.procs")? else {
            return Ok(None);
        };
        let mut pids = parse_procs(&text).map_err(|problem| StatsError::Parse {
            path: dir.join("cgroup.procs"),
            problem,
        })?;
        pids.sort_unstable();
        pids.dedup();
        Ok(Some(pids))
    }
}

/// `cgroup` as a relative path of normal components only.
fn checked_relative(cgroup: &str) -> Result<&Path> {
    let path = Path::new(cgroup);
    let plain = !cgroup.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(path)
    } else {
        Err(StatsError::InvalidPath {
            path: cgroup.to_string(),
        })
    }
}

/// The content of `dir/file`; `None` when the directory itself is gone (the cgroup was
/// removed), an error for anything else, a missing file in an existing cgroup included.
fn read(dir: &Path, file: &str) -> Result<Option<String>> {
    let path = dir.join(file);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.exists() => Ok(None),
        // a cgroup being removed while it is read
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(source) => Err(StatsError::Read { path, source }),
    }
}

fn read_number(dir: &Path, file: &str) -> Result<Option<u64>> {
    let Some(text) = read(dir, file)? else {
        return Ok(None);
    };
    parse_number(&text)
        .map(Some)
        .map_err(|problem| StatsError::Parse {
            path: dir.join(file),
            problem,
        })
}

fn read_limit(dir: &Path, file: &str) -> Result<Option<Option<u64>>> {
    let Some(text) = read(dir, file)? else {
        return Ok(None);
    };
    parse_limit(&text)
        .map(Some)
        .map_err(|problem| StatsError::Parse {
            path: dir.join(file),
            problem,
        })
}

fn read_stat(dir: &Path, file: &str, key: &str) -> Result<Option<u64>> {
    let Some(text) = read(dir, file)? else {
        return Ok(None);
    };
    parse_keyed(&text, key)
        .map(Some)
        .map_err(|problem| StatsError::Parse {
            path: dir.join(file),
            problem,
        })
}

/// A file holding one unsigned number (`cpuacct.usage`, `memory.current`, `pids.current`).
fn parse_number(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    t.parse()
        .map_err(|_| format!("expected a number, found `{}`", shorten(t)))
}

/// A limit: `max` (v2, and v1 `pids.max`) or a number; v1's huge "unlimited" value is
/// `None` too.
fn parse_limit(text: &str) -> std::result::Result<Option<u64>, String> {
    let t = text.trim();
    if t == "max" {
        return Ok(None);
    }
    let n = parse_number(t)
        .map_err(|_| format!("expected `max` or a number, found `{}`", shorten(t)))?;
    Ok((n < UNLIMITED_FROM).then_some(n))
}

/// The value of `key` in a flat keyed file (`memory.stat`, `cpu.stat`: `key value` lines).
fn parse_keyed(text: &str, key: &str) -> std::result::Result<u64, String> {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some(key) {
            let value = words.next().unwrap_or("");
            return value.parse().map_err(|_| {
                format!(
                    "expected a number after `{key}`, found `{}`",
                    shorten(value)
                )
            });
        }
    }
    Err(format!("no `{key}` line"))
}

/// `cgroup.procs`: one pid a line.
fn parse_procs(text: &str) -> std::result::Result<Vec<i32>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<i32>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("expected a pid, found `{}`", shorten(l)))
        })
        .collect()
}

/// At most 40 characters of `s`, for messages.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().nth(40).is_some() {
        out.push('…');
    }
    out
}

/// One process, as `top` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// pid on the host.
    pub pid: i32,
    /// Parent pid on the host.
    pub ppid: i32,
    /// Effective uid.
    pub uid: u32,
    /// The command line (argv), or `[comm]` when it has none (a zombie).
    pub command: Vec<String>,
}

/// Reads process `pid` from `proc_root` (`/proc`); `None` when it is gone or its files do
/// not parse (a process that exits while it is read).
#[must_use]
pub fn process(proc_root: &Path, pid: i32) -> Option<Process> {
    let dir = proc_root.join(pid.to_string());
    let status = fs::read_to_string(dir.join("status")).ok()?;
    let (name, ppid, uid) = parse_status(&status)?;
    let cmdline = fs::read(dir.join("cmdline")).ok()?;
    let mut command = parse_cmdline(&cmdline);
    if command.is_empty() {
        command.push(format!("[{name}]"));
    }
    Some(Process {
        pid,
        ppid,
        uid,
        command,
    })
}

/// `(Name, PPid, effective Uid)` from /proc/PID/status.
fn parse_status(text: &str) -> Option<(String, i32, u32)> {
    let mut name = None;
    let mut ppid = None;
    let mut uid = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Name:") {
            name = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("PPid:") {
            ppid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("Uid:") {
            // real, effective, saved, filesystem
            uid = v.split_whitespace().nth(1).and_then(|u| u.parse().ok());
        }
    }
    Some((name?, ppid?, uid?))
}

/// argv from /proc/PID/cmdline (NUL-terminated strings).
fn parse_cmdline(raw: &[u8]) -> Vec<String> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// uid -> name from an /etc/passwd text (the first entry of a uid wins, as getpwuid).
#[must_use]
pub fn user_names(passwd: &str) -> BTreeMap<u32, String> {
    let mut names = BTreeMap::new();
    for line in passwd.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let Ok(uid) = uid.parse::<u32>()
            && !name.is_empty()
            && !name.starts_with('#')
        {
            names.entry(uid).or_insert_with(|| name.to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MEMORY_STAT: &str = "\
cache 1081344
rss 405504
shmem 0
mapped_file 0
inactive_anon 0
active_anon 405504
inactive_file 811008
active_file 270336
hierarchical_memory_limit 67108864
total_cache 1081344
total_rss 405504
total_inactive_anon 0
total_active_anon 405504
total_inactive_file 811008
total_active_file 270336
";

    const V2_MEMORY_STAT: &str = "\
anon 33845248
file 1744896
kernel 372736
kernel_stack 16384
shmem 33554432
file_mapped 0
file_dirty 0
active_anon 33816576
inactive_anon 28672
active_file 122880
inactive_file 1622016
slab 255768
workingset_refault_anon 0
";

    const V2_CPU_STAT: &str = "\
usage_usec 1523761
user_usec 1501234
system_usec 22527
nr_periods 31
nr_throttled 28
throttled_usec 1289340
nr_bursts 0
burst_usec 0
";

    #[test]
    fn cpu_percent_is_time_used_over_time_passed() {
        let half = cpu_percent(1_000_000_000, 1_500_000_000, Duration::from_secs(1)).unwrap();
        assert!((half - 50.0).abs() < 1e-9, "{half}");
        let two = cpu_percent(0, 4_000_000_000, Duration::from_secs(2)).unwrap();
        assert!((two - 200.0).abs() < 1e-9, "{two}");
        assert_eq!(cpu_percent(5, 5, Duration::from_millis(10)), Some(0.0));
        assert_eq!(cpu_percent(10, 5, Duration::from_secs(1)), None);
        assert_eq!(cpu_percent(0, 5, Duration::ZERO), None);
    }

    #[test]
    fn memory_usage_leaves_out_inactive_file_pages_as_docker_does() {
        let m = Memory {
            charged: 1_486_848,
            inactive_file: parse_keyed(V1_MEMORY_STAT, "total_inactive_file").unwrap(),
            limit: Some(64 << 20),
        };
        assert_eq!(m.usage(), 1_486_848 - 811_008);
        // a statistic larger than the charge (they are read at different times)
        let odd = Memory {
            charged: 100,
            inactive_file: 200,
            limit: None,
        };
        assert_eq!(odd.usage(), 100);
    }

    #[test]
    fn v1_memory_stat_takes_the_hierarchical_total_not_the_local_value() {
        let text = "inactive_file 5\ntotal_inactive_file 7\n";
        assert_eq!(parse_keyed(text, "total_inactive_file"), Ok(7));
        assert_eq!(parse_keyed(text, "inactive_file"), Ok(5));
    }

    #[test]
    fn v2_stat_files_parse() {
        assert_eq!(parse_keyed(V2_MEMORY_STAT, "inactive_file"), Ok(1_622_016));
        assert_eq!(parse_keyed(V2_CPU_STAT, "usage_usec"), Ok(1_523_761));
        assert_eq!(
            parse_keyed("anon 1\n", "inactive_file"),
            Err("no `inactive_file` line".into())
        );
        assert_eq!(
            parse_keyed("usage_usec x\n", "usage_usec"),
            Err("expected a number after `usage_usec`, found `x`".into())
        );
    }

    #[test]
    fn limits_read_max_and_the_v1_unlimited_value_as_none() {
        assert_eq!(parse_limit("max\n"), Ok(None));
        assert_eq!(parse_limit("9223372036854771712\n"), Ok(None));
        assert_eq!(parse_limit("9223372036854710272\n"), Ok(None)); // 64 KiB pages
        assert_eq!(parse_limit("67108864\n"), Ok(Some(67_108_864)));
        assert_eq!(
            parse_limit("-1\n"),
            Err("expected `max` or a number, found `-1`".into())
        );
    }

    #[test]
    fn procs_parse_and_reject_garbage() {
        assert_eq!(parse_procs("12\n7\n\n"), Ok(vec![12, 7]));
        assert_eq!(parse_procs(""), Ok(vec![]));
        assert_eq!(
            parse_procs("1\nx\n"),
            Err("expected a pid, found `x`".into())
        );
        assert_eq!(parse_procs("0\n"), Err("expected a pid, found `0`".into()));
    }

    #[test]
    fn status_gives_name_parent_and_effective_uid() {
        let text = "Name:\tsh\nUmask:\t0022\nState:\tR (running)\nTgid:\t42\nPid:\t42\nPPid:\t40\n\
                    Uid:\t0\t1000\t1000\t1000\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_status(text), Some(("sh".into(), 40, 1000)));
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn cmdline_splits_on_nul_and_drops_the_terminator() {
        assert_eq!(
            parse_cmdline(b"/bin/sh\0-c\0while :; do :; done\0"),
            ["/bin/sh", "-c", "while :; do :; done"]
        );
        assert_eq!(parse_cmdline(b"a\0\0b\0"), ["a", "", "b"]);
        assert!(parse_cmdline(b"").is_empty());
    }

    #[test]
    fn user_names_take_the_first_entry_of_a_uid() {
        let names = user_names(
            "root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/:/bin/sh\nbad\nnobody:x:65534:65534::/:/x\n",
        );
        assert_eq!(names.get(&0).map(String::as_str), Some("root"));
        assert_eq!(names.get(&65534).map(String::as_str), Some("nobody"));
        assert_eq!(names.len(), 2);
    }

    /// A fake cgroup tree in a temporary directory.
    fn fake_tree(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("rcompose-stats-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        root
    }

    #[test]
    fn reads_a_v2_cgroup_of_a_fake_tree() {
        let root = fake_tree("v2");
        let cg = root.join("rcompose/p/web-1/app");
        fs::create_dir_all(&cg).unwrap();
        fs::write(cg.join("cpu.stat"), V2_CPU_STAT).unwrap();
        fs::write(cg.join("memory.current"), "35762176\n").unwrap();
        fs::write(cg.join("memory.max"), "67108864\n").unwrap();
        fs::write(cg.join("memory.stat"), V2_MEMORY_STAT).unwrap();
        fs::write(cg.join("pids.current"), "2\n").unwrap();
        fs::write(cg.join("pids.max"), "max\n").unwrap();
        fs::write(cg.join("cgroup.procs"), "31\n30\n").unwrap();
        let reader = CgroupReader::new(CgroupVersion::V2, vec![("unified".into(), root.clone())]);
        let usage = reader.usage("rcompose/p/web-1/app").unwrap().unwrap();
        assert_eq!(
            usage,
            Usage {
                cpu_ns: 1_523_761_000,
                memory: Memory {
                    charged: 35_762_176,
                    inactive_file: 1_622_016,
                    limit: Some(67_108_864),
                },
                pids: 2,
                pids_limit: None,
            }
        );
        assert_eq!(usage.memory.usage(), 35_762_176 - 1_622_016);
        assert_eq!(
            reader.procs("rcompose/p/web-1/app").unwrap(),
            Some(vec![30, 31])
        );
        // a container that is not running: its cgroup is gone
        assert_eq!(reader.usage("rcompose/p/web-2/app").unwrap(), None);
        assert_eq!(reader.procs("rcompose/p/web-2/app").unwrap(), None);
        // a missing file in an existing cgroup (a controller not enabled) is an error
        fs::remove_file(cg.join("pids.current")).unwrap();
        assert!(matches!(
            reader.usage("rcompose/p/web-1/app"),
            Err(StatsError::Read { .. })
        ));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn reads_a_v1_cgroup_across_hierarchies_of_a_fake_tree() {
        let root = fake_tree("v1");
        let mounts: Vec<(String, PathBuf)> = ["cpuacct", "memory", "pids"]
            .iter()
            .map(|c| ((*c).to_string(), root.join(c)))
            .collect();
        let rel = "rcompose/p/db-1/db";
        for (_, m) in &mounts {
            fs::create_dir_all(m.join(rel)).unwrap();
        }
        fs::write(
            root.join("cpuacct").join(rel).join("cpuacct.usage"),
            "2500000000\n",
        )
        .unwrap();
        let mem = root.join("memory").join(rel);
        fs::write(mem.join("memory.usage_in_bytes"), "1486848\n").unwrap();
        fs::write(mem.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        fs::write(mem.join("memory.stat"), V1_MEMORY_STAT).unwrap();
        let pids = root.join("pids").join(rel);
        fs::write(pids.join("pids.current"), "3\n").unwrap();
        fs::write(pids.join("pids.max"), "16\n").unwrap();
        fs::write(pids.join("cgroup.procs"), "9\n").unwrap();
        let reader = CgroupReader::new(CgroupVersion::V1, mounts.clone());
        let usage = reader.usage(rel).unwrap().unwrap();
        assert_eq!(usage.cpu_ns, 2_500_000_000);
        assert_eq!(usage.memory.limit, None);
        assert_eq!(usage.memory.usage(), 1_486_848 - 811_008);
        assert_eq!((usage.pids, usage.pids_limit), (3, Some(16)));
        assert_eq!(reader.procs(rel).unwrap(), Some(vec![9]));
        // garbage is an error naming the file
        fs::write(mem.join("memory.usage_in_bytes"), "lots\n").unwrap();
        let err = reader.usage(rel).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "unexpected content in `{}`: expected a number, found `lots`",
                mem.join("memory.usage_in_bytes").display()
            )
        );
        // a hierarchy that is not mounted
        let no_pids = CgroupReader::new(CgroupVersion::V1, mounts[..2].to_vec());
        assert!(matches!(
            no_pids.usage(rel),
            Err(StatsError::NoController { controller: "pids" })
        ));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn cgroup_paths_that_leave_the_hierarchy_are_refused() {
        let reader = CgroupReader::new(
            CgroupVersion::V2,
            vec![("unified".into(), "/sys/fs/cgroup".into())],
        );
        for bad in ["", "/etc", "rcompose/../../etc", "./x"] {
            assert!(
                matches!(reader.usage(bad), Err(StatsError::InvalidPath { .. })),
                "{bad}"
            );
        }
    }
}
