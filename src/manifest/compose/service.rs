//! One Compose service -> a pod of one container (+ its image, its service, its watch
//! rules), and `extends`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{Loader, Tag, entries, get, normalize, rebase, scalar};
use crate::manifest::convert::{index, join};
use crate::manifest::node::{Key, Kind, Loc, Node, Scalar, ScalarType};
use crate::manifest::{
    CommandSpec, Condition, ContainerSpec, DependencySpec, DependsOnSpec, EnvSpec, FileUseSpec,
    HealthcheckSpec, ImageSpec, LongFileUseSpec, LongMountSpec, Manifest, MountSpec, MountType,
    NetworkMode, PodSpec, PortMapping, PortSpec, PullPolicy, Quantity, ResourcesSpec, Restart,
    ServiceSpec, Text, TmpfsSpec, WatchAction, WatchSpec,
};

/// The label every pod made from a Compose service has: `compose.service: NAME`.
pub(crate) const SERVICE_LABEL: &str = "compose.service";

/// The keys of a Compose service, as in the Compose Specification.
const SERVICE_KEYS: [&str; 88] = [
    "annotations",
    "attach",
    "blkio_config",
    "build",
    "cap_add",
    "cap_drop",
    "cgroup",
    "cgroup_parent",
    "command",
    "configs",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpus",
    "cpuset",
    "credential_spec",
    "depends_on",
    "deploy",
    "develop",
    "device_cgroup_rules",
    "devices",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "entrypoint",
    "env_file",
    "environment",
    "expose",
    "extends",
    "external_links",
    "extra_hosts",
    "gpus",
    "group_add",
    "healthcheck",
    "hostname",
    "image",
    "init",
    "ipc",
    "isolation",
    "label_file",
    "labels",
    "links",
    "logging",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "models",
    "network_mode",
    "networks",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "ports",
    "post_start",
    "pre_start",
    "pre_stop",
    "privileged",
    "profiles",
    "provider",
    "pull_policy",
    "pull_refresh_after",
    "read_only",
    "restart",
    "runtime",
    "scale",
    "secrets",
    "security_opt",
    "shm_size",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "storage_opt",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
    "use_api_socket",
    "user",
];
/// The rest of the service keys (an array literal of 88 is long enough to read).
const SERVICE_KEYS_2: [&str; 5] = [
    "userns_mode",
    "uts",
    "volumes",
    "volumes_from",
    "working_dir",
];

/// Keys that would change what runs if ignored, with the reason they are refused.
const UNSUPPORTED: [(&str, &str); 28] = [
    (
        "build",
        "rcompose does not build images yet: build and push the image, then set `image:`",
    ),
    (
        "extra_hosts",
        "/etc/hosts holds the project's own names only",
    ),
    (
        "external_links",
        "there are no containers outside the project to link",
    ),
    ("volumes_from", "mount the same volumes by name instead"),
    (
        "devices",
        "containers get a minimal fixed set of device nodes",
    ),
    (
        "device_cgroup_rules",
        "containers get a minimal fixed set of device nodes",
    ),
    ("gpus", "GPUs are not passed to containers"),
    ("group_add", "supplementary groups are not supported yet"),
    ("ipc", "each pod has its own IPC namespace"),
    ("pid", "each container has its own PID namespace"),
    ("uts", "each pod has its own UTS namespace"),
    ("userns_mode", "user namespaces are not supported yet"),
    ("cgroup", "each container has its own cgroup"),
    ("cgroup_parent", "rcompose places the cgroups itself"),
    (
        "security_opt",
        "the seccomp profile and no_new_privs are fixed (use `privileged` or `cap_add`)",
    ),
    ("sysctls", "sysctls are not set yet"),
    (
        "ulimits",
        "rlimits are not set yet (use `pids_limit` for processes)",
    ),
    (
        "storage_opt",
        "the writable layer is an overlayfs directory without options",
    ),
    (
        "runtime",
        "use the pod's `runtime` in an rcompose.yaml (builtin, crun or runc)",
    ),
    ("credential_spec", "a Windows feature"),
    ("isolation", "a Windows feature"),
    ("post_start", "lifecycle hooks are not supported yet"),
    ("pre_stop", "lifecycle hooks are not supported yet"),
    ("pre_start", "lifecycle hooks are not supported yet"),
    ("models", "rcompose runs no AI models"),
    ("provider", "services provided by plugins are not supported"),
    ("use_api_socket", "there is no Docker API socket"),
    ("blkio_config", "block I/O limits are not set yet"),
];

/// Keys that are ignored with a warning: harmless to run without, or meaningless here.
const IGNORED: [(&str, &str); 27] = [
    ("container_name", "replicas are named `<service>-<n>`"),
    (
        "hostname",
        "a replica's hostname is its name, `<service>-<n>`",
    ),
    ("domainname", "a replica's hostname is its name"),
    (
        "labels",
        "container labels are metadata rcompose does not keep",
    ),
    (
        "label_file",
        "container labels are metadata rcompose does not keep",
    ),
    (
        "annotations",
        "annotations are metadata rcompose does not keep",
    ),
    (
        "logging",
        "output goes to rcompose's log files (`rcompose logs`)",
    ),
    ("stdin_open", "containers get no stdin"),
    ("attach", "every container's output is shown"),
    ("platform", "images are pulled for this machine's platform"),
    (
        "pull_refresh_after",
        "`pull_policy` is honoured without a refresh period",
    ),
    ("links", "service names resolve without links"),
    ("dns", "containers use the host's resolvers"),
    ("dns_opt", "containers use the host's resolver options"),
    ("dns_search", "containers use the host's search domains"),
    (
        "shm_size",
        "/dev/shm is a tmpfs of the kernel's default size",
    ),
    ("mac_address", "addresses are assigned by rcompose"),
    ("oom_score_adj", "not set"),
    ("oom_kill_disable", "not set"),
    (
        "cpu_shares",
        "CPU weights are not set; use `cpus` for a limit",
    ),
    ("cpu_count", "a Windows feature"),
    ("cpu_percent", "a Windows feature"),
    ("cpu_period", "use `cpus` for a limit"),
    ("cpu_quota", "use `cpus` for a limit"),
    ("cpu_rt_period", "not set"),
    ("cpu_rt_runtime", "not set"),
    ("mem_swappiness", "not set"),
];

/// More keys ignored with a warning.
const IGNORED_2: [(&str, &str); 3] = [
    ("memswap_limit", "swap is not limited separately"),
    ("cpuset", "CPUs are not pinned"),
    ("init", ""),
];

fn known_key(name: &str) -> bool {
    SERVICE_KEYS.contains(&name) || SERVICE_KEYS_2.contains(&name)
}

/// Keys whose value is replaced, not merged (Compose's merge rules: shell commands).
const REPLACE: [&str; 3] = ["command", "entrypoint", "test"];
/// Keys whose list values are appended (Compose's merge rules), identical items once; other
/// lists are appended too.
const APPEND: [&str; 12] = [
    "expose",
    "cap_add",
    "cap_drop",
    "dns",
    "dns_search",
    "tmpfs",
    "env_file",
    "security_opt",
    "external_links",
    "links",
    "group_add",
    "devices",
];
/// Keys whose list values merge by a unique key (`volumes`, `secrets` and `configs` by
/// target, `ports` by address, published port, target and protocol): an item of the later
/// file replaces the one with its key.
const MERGE_BY: [&str; 4] = ["volumes", "secrets", "configs", "ports"];
/// Keys whose list-or-map values merge as maps (`KEY=VALUE` items, or names).
const AS_MAP: [&str; 7] = [
    "environment",
    "labels",
    "extra_hosts",
    "annotations",
    "sysctls",
    "depends_on",
    "networks",
];

/// Resolves `extends` of a service: the service it extends (same file, or `file:`), with
/// this one merged over it, recursively. Returns the merged service and its directory.
pub(super) fn extends(
    ld: &mut Loader<'_>,
    name: &str,
    node: &Node,
    dir: &Path,
    all: &BTreeMap<String, (Node, PathBuf)>,
    path: &str,
) -> (Node, PathBuf) {
    let mut stack = vec![(PathBuf::new(), name.to_string())];
    let node = rebased(node, dir);
    let merged = resolve(ld, &node, Path::new(""), all, path, &mut stack);
    (strip_resets(ld, &merged), PathBuf::new())
}

fn resolve(
    ld: &mut Loader<'_>,
    node: &Node,
    dir: &Path,
    all: &BTreeMap<String, (Node, PathBuf)>,
    path: &str,
    stack: &mut Vec<(PathBuf, String)>,
) -> Node {
    let Some((ekey, ext)) = entries(node).iter().find(|(k, _)| k.name == "extends") else {
        return node.clone();
    };
    let epath = join(path, "extends");
    let (base_name, file) = match &ext.kind {
        Kind::Scalar(s) => (s.text.clone(), None),
        Kind::Map(_) => {
            ld.unknown_keys(ext, &epath, &["service", "file"], "in `extends`");
            let Some(s) =
                get(ext, "service").and_then(|s| ld.text(s, &join(&epath, "service"), "`service`"))
            else {
                ld.error(&epath, ekey.loc, "`extends` needs a `service`".into());
                return without(node, "extends");
            };
            let f = get(ext, "file").and_then(|f| {
                ld.text(f, &join(&epath, "file"), "`file`")
                    .map(|t| (t, f.loc))
            });
            (s, f)
        }
        other => {
            let found = other.describe();
            ld.error(
                &epath,
                ext.loc,
                format!(
                    "wrong type for `extends`: expected a service name or a mapping, found {found}"
                ),
            );
            return without(node, "extends");
        }
    };
    let (base, base_dir, file_key) = match file {
        None => {
            // same file: a service of the file the extending service is in
            let from_file = stack.last().map(|(f, _)| f.clone()).unwrap_or_default();
            let found = if from_file.as_os_str().is_empty() {
                all.get(&base_name)
                    .map(|(n, d)| (rebased(n, d), PathBuf::new()))
            } else {
                ld.files.get(&from_file).cloned().flatten().and_then(|f| {
                    get(&f.tree, "services")
                        .and_then(|s| get(s, &base_name))
                        .map(|n| (rebased(n, &f.dir), PathBuf::new()))
                })
            };
            match found {
                Some((n, d)) => (n, d, from_file),
                None => {
                    ld.error(
                        &epath,
                        ext.loc,
                        format!("`extends` names the service `{base_name}`, which is not defined"),
                    );
                    return without(node, "extends");
                }
            }
        }
        Some((f, loc)) => {
            let p = normalize(&PathBuf::from(rebase(dir, &f)));
            let Some(file) = ld.file(&p, (&epath, loc), None) else {
                return without(node, "extends");
            };
            match get(&file.tree, "services").and_then(|s| get(s, &base_name)) {
                Some(n) => (rebased(n, &file.dir), PathBuf::new(), p),
                None => {
                    ld.error(
                        &epath,
                        ext.loc,
                        format!(
                            "`extends` names the service `{base_name}`, which `{}` does not define",
                            p.display()
                        ),
                    );
                    return without(node, "extends");
                }
            }
        }
    };
    let id = (file_key, base_name.clone());
    if stack.contains(&id) {
        let chain: Vec<String> = stack
            .iter()
            .chain([&id])
            .map(|(_, s)| format!("`{s}`"))
            .collect();
        ld.error(
            &epath,
            ext.loc,
            format!("`extends` cycle: {}", chain.join(" -> ")),
        );
        return without(node, "extends");
    }
    stack.push(id);
    let base = resolve(ld, &base, &base_dir, all, path, stack);
    stack.pop();
    merge(ld, &base, &without(node, "extends"))
}

/// Removes the keys tagged `!reset` (what is left once nothing is merged under them).
pub(super) fn strip_resets(ld: &Loader<'_>, node: &Node) -> Node {
    match &node.kind {
        Kind::Map(entries) => Node {
            kind: Kind::Map(
                entries
                    .iter()
                    .filter(|(k, _)| ld.tag(k) != Some(Tag::Reset))
                    .map(|(k, v)| (k.clone(), strip_resets(ld, v)))
                    .collect(),
            ),
            loc: node.loc,
        },
        Kind::Seq(items) => Node {
            kind: Kind::Seq(items.iter().map(|i| strip_resets(ld, i)).collect()),
            loc: node.loc,
        },
        Kind::Scalar(_) | Kind::Null => node.clone(),
    }
}

fn without(node: &Node, key: &str) -> Node {
    let mut n = node.clone();
    if let Kind::Map(e) = &mut n.kind {
        e.retain(|(k, _)| k.name != key);
    }
    n
}

/// Compose's merge of `over` onto `base` (a service over the one it `extends`, or over the
/// same service of an earlier file; also top-level volumes, networks, secrets and configs):
/// mappings merged key by key, lists appended (by a unique key for [`MERGE_BY`], as mappings
/// for [`AS_MAP`]), [`REPLACE`] keys and scalars replaced, a null value leaves the base as
/// it is. A key of `over` tagged `!override` replaces the value without merging, one tagged
/// `!reset` too (its value is dropped by `strip_resets` once every merge is done, so that a
/// base merged under it later cannot bring it back).
pub(super) fn merge(ld: &Loader<'_>, base: &Node, over: &Node) -> Node {
    if matches!(over.kind, Kind::Null) {
        return base.clone();
    }
    let (Kind::Map(b), Kind::Map(o)) = (&base.kind, &over.kind) else {
        return over.clone();
    };
    let mut out: Vec<(Key, Node)> = b.clone();
    for (key, value) in o {
        if ld.tag(key).is_some() {
            // `!reset` / `!override`: the tagged entry replaces the base's
            match out.iter_mut().find(|(k, _)| k.name == key.name) {
                Some(slot) => *slot = (key.clone(), value.clone()),
                None => out.push((key.clone(), value.clone())),
            }
            continue;
        }
        let Some(slot) = out.iter_mut().find(|(k, _)| k.name == key.name) else {
            out.push((key.clone(), value.clone()));
            continue;
        };
        if matches!(value.kind, Kind::Null) {
            continue;
        }
        let name = key.name.as_str();
        let merged = if REPLACE.contains(&name) {
            value.clone()
        } else if APPEND.contains(&name) {
            append(&slot.1, value, |_| None)
        } else if MERGE_BY.contains(&name) {
            append(&slot.1, value, |n| unique_key(name, n))
        } else if AS_MAP.contains(&name) {
            merge(ld, &as_map(&slot.1), &as_map(value))
        } else {
            match (&slot.1.kind, &value.kind) {
                (Kind::Map(_), Kind::Map(_)) => merge(ld, &slot.1, value),
                (Kind::Seq(_), Kind::Seq(_)) => append(&slot.1, value, |_| None),
                _ => value.clone(),
            }
        };
        *slot = (key.clone(), merged);
    }
    Node {
        kind: Kind::Map(out),
        loc: over.loc,
    }
}

/// Appends the items of `over` to `base`; an item whose `key` matches one of `base`
/// replaces it, and identical scalars are not repeated.
fn append(base: &Node, over: &Node, key: impl Fn(&Node) -> Option<String>) -> Node {
    let items = |n: &Node| match &n.kind {
        Kind::Seq(items) => items.clone(),
        Kind::Null => Vec::new(),
        _ => vec![n.clone()],
    };
    let mut out = items(base);
    for item in items(over) {
        let k = key(&item);
        if let Some(pos) = out.iter().position(|b| {
            (k.is_some() && key(b) == k) || (scalar(b).is_some() && scalar(b) == scalar(&item))
        }) {
            out[pos] = item;
        } else {
            out.push(item);
        }
    }
    Node {
        kind: Kind::Seq(out),
        loc: over.loc,
    }
}

/// The unique key of an item of a [`MERGE_BY`] list (compose-go's `EnforceUnicity`):
/// a volume's target, a secret's or config's target (by default `/run/secrets/SOURCE` and
/// `/SOURCE`), a port's host address, published port, target and protocol.
fn unique_key(kind: &str, n: &Node) -> Option<String> {
    let field = |name: &str| get(n, name).and_then(scalar).unwrap_or_default();
    match (kind, &n.kind) {
        ("volumes", Kind::Scalar(s)) => {
            Some(s.text.split(':').nth(1).unwrap_or(&s.text).to_string())
        }
        ("volumes", Kind::Map(_)) => get(n, "target").and_then(scalar).map(str::to_string),
        ("ports", Kind::Scalar(s)) => {
            let (spec, protocol) = s.text.split_once('/').unwrap_or((&s.text, "tcp"));
            let mut parts = spec.rsplitn(3, ':');
            let target = parts.next().unwrap_or_default();
            let published = parts.next().unwrap_or_default();
            let ip = parts.next().unwrap_or_default();
            Some(format!("{ip}|{published}|{target}|{protocol}"))
        }
        ("ports", Kind::Map(_)) => {
            let protocol = get(n, "protocol").and_then(scalar).unwrap_or("tcp");
            Some(format!(
                "{}|{}|{}|{protocol}",
                field("host_ip"),
                field("published"),
                field("target")
            ))
        }
        (_, Kind::Scalar(s)) => Some(default_target(kind, &s.text)),
        (_, Kind::Map(_)) => match get(n, "target").and_then(scalar) {
            Some(t) => Some(t.to_string()),
            None => Some(default_target(kind, field("source"))),
        },
        _ => None,
    }
}

/// Where a secret (`/run/secrets/NAME`) or config (`/NAME`) is mounted without a `target`.
fn default_target(kind: &str, source: &str) -> String {
    if kind == "secrets" {
        format!("/run/secrets/{source}")
    } else {
        format!("/{source}")
    }
}

/// A list of `KEY=VALUE` (or `KEY`) items as a mapping; a mapping as is.
fn as_map(node: &Node) -> Node {
    let Kind::Seq(items) = &node.kind else {
        return node.clone();
    };
    let mut out = Vec::new();
    for item in items {
        let Some(text) = scalar(item) else { continue };
        let (k, v) = match text.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (text, None),
        };
        let value = match v {
            Some(v) => Node {
                kind: Kind::Scalar(Scalar {
                    text: v.to_string(),
                    ty: ScalarType::Str,
                }),
                loc: item.loc,
            },
            None => Node {
                kind: Kind::Null,
                loc: item.loc,
            },
        };
        out.push((
            Key {
                name: k.to_string(),
                loc: item.loc,
                def: item.loc,
            },
            value,
        ));
    }
    Node {
        kind: Kind::Map(out),
        loc: node.loc,
    }
}

/// The service with its relative paths (bind sources, env files, watch paths) made
/// relative to the project directory.
pub(super) fn rebased(node: &Node, dir: &Path) -> Node {
    let mut n = node.clone();
    if dir.as_os_str().is_empty() {
        return n;
    }
    let Kind::Map(entries) = &mut n.kind else {
        return n;
    };
    let fix = |s: &mut Scalar| s.text = rebase(dir, &s.text);
    for (key, value) in entries.iter_mut() {
        match (key.name.as_str(), &mut value.kind) {
            ("extends", Kind::Map(e)) => {
                for (k, v) in e.iter_mut() {
                    if let (true, Kind::Scalar(s)) = (k.name == "file", &mut v.kind) {
                        fix(s);
                    }
                }
            }
            ("env_file", Kind::Scalar(s)) => fix(s),
            ("env_file", Kind::Seq(items)) => {
                for item in items {
                    match &mut item.kind {
                        Kind::Scalar(s) => fix(s),
                        Kind::Map(e) => {
                            for (k, v) in e.iter_mut() {
                                if let (true, Kind::Scalar(s)) = (k.name == "path", &mut v.kind) {
                                    fix(s);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            ("volumes", Kind::Seq(items)) => {
                for item in items {
                    match &mut item.kind {
                        Kind::Scalar(s) if s.text.starts_with('.') => {
                            if let Some((src, rest)) = s.text.split_once(':') {
                                s.text = format!("{}:{rest}", rebase(dir, src));
                            }
                        }
                        Kind::Map(e) => {
                            for (k, v) in e.iter_mut() {
                                if let (true, Kind::Scalar(s)) = (k.name == "source", &mut v.kind)
                                    && s.text.starts_with('.')
                                {
                                    fix(s);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            ("develop", Kind::Map(e)) => {
                for (k, v) in e.iter_mut() {
                    if k.name != "watch" {
                        continue;
                    }
                    if let Kind::Seq(rules) = &mut v.kind {
                        for rule in rules {
                            if let Kind::Map(re) = &mut rule.kind {
                                for (rk, rv) in re.iter_mut() {
                                    if let (true, Kind::Scalar(s)) =
                                        (rk.name == "path", &mut rv.kind)
                                    {
                                        fix(s);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    n
}

/// Maps one (active, `extends`-resolved) service into `m`.
#[allow(clippy::too_many_arguments)]
pub(super) fn service(
    ld: &mut Loader<'_>,
    m: &mut Manifest,
    name: &str,
    key: &Key,
    node: &Node,
    _dir: &Path,
    active: &BTreeMap<String, (Key, Node, PathBuf)>,
    disabled: &BTreeMap<String, Vec<String>>,
) {
    let path = join("services", name);
    if crate::manifest::validate::dns_label(name, 40).is_err() {
        ld.error(&path, key.loc, format!("the service name `{name}` cannot be used: rcompose names pods and hosts with DNS labels (at most 40 lower-case letters, digits and `-`, starting and ending with a letter or digit); rename the service"));
        return;
    }
    let pod_path = join("pods", name);
    let cpath = index(&join(&pod_path, "containers"), 0);
    ld.cx.place(&pod_path, key.loc, node.loc);
    ld.cx.place(&cpath, key.loc, node.loc);
    let mut pod = PodSpec {
        labels: BTreeMap::from([(SERVICE_LABEL.to_string(), name.to_string())]),
        ..PodSpec::default()
    };
    let mut c = ContainerSpec {
        name: name.to_string(),
        ..ContainerSpec::default()
    };
    let mut ports: Vec<(PortMapping, Loc)> = Vec::new();
    let mut env: BTreeMap<String, Text> = BTreeMap::new();
    let mut env_from_file: BTreeMap<String, Text> = BTreeMap::new();
    let mut resources = ResourcesSpec::default();
    let mut image = ImageSpec::default();
    let mut has_image = false;
    let mut mounts: Vec<MountSpec> = Vec::new();
    for (k, value) in entries(node) {
        let kp = join(&path, &k.name);
        let field = |f: &str| join(&cpath, f);
        let kname = k.name.as_str();
        if kname.starts_with("x-") {
            continue;
        }
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(n, _)| *n == kname) {
            ld.error(&kp, k.loc, format!("`{kname}` is not supported: {why}"));
            continue;
        }
        if let Some((_, why)) = IGNORED
            .iter()
            .chain(IGNORED_2.iter())
            .find(|(n, _)| *n == kname)
        {
            if !why.is_empty() {
                ld.warn(&kp, k.loc, format!("`{kname}` is ignored: {why}"));
            }
            continue;
        }
        match kname {
            "image" => {
                if let Some(t) = ld.text(value, &kp, "`image`") {
                    image.reference = Some(t);
                    has_image = true;
                    ld.cx.place(&join("images", name), k.loc, value.loc);
                    ld.cx.place(&field("image"), k.loc, value.loc);
                }
            }
            "pull_policy" => {
                let t = ld.text(value, &kp, "`pull_policy`").unwrap_or_default();
                image.pull = match t.as_str() {
                    "always" | "daily" | "weekly" => Some(PullPolicy::Always),
                    "missing" | "if_not_present" => Some(PullPolicy::Missing),
                    "never" => Some(PullPolicy::Never),
                    "build" => {
                        ld.error(&kp, value.loc, "`pull_policy: build` is not supported: rcompose does not build images yet".into());
                        None
                    }
                    other => {
                        ld.error(&kp, value.loc, format!("unknown `pull_policy` `{other}`: expected `always`, `missing`, `never`"));
                        None
                    }
                };
            }
            "command" | "entrypoint" => {
                let cmd = command(ld, value, &kp, kname);
                ld.cx.place(&field(kname), k.loc, value.loc);
                if kname == "command" {
                    c.command = cmd;
                } else {
                    c.entrypoint = cmd;
                }
            }
            "environment" => {
                ld.cx.place(&field("env"), k.loc, value.loc);
                environment(ld, value, &kp, &mut env);
            }
            "env_file" => env_files(ld, value, &kp, &mut env_from_file),
            "working_dir" => c.working_dir = ld.text(value, &kp, "`working_dir`"),
            "user" => c.user = ld.text(value, &kp, "`user`"),
            "privileged" => c.privileged = ld.boolean(value, &kp, "`privileged`"),
            "read_only" => c.read_only = ld.boolean(value, &kp, "`read_only`"),
            "tty" => c.tty = ld.boolean(value, &kp, "`tty`"),
            "stop_signal" => c.stop_signal = ld.text(value, &kp, "`stop_signal`"),
            "stop_grace_period" => c.stop_grace_period = ld.text(value, &kp, "`stop_grace_period`"),
            "cap_add" | "cap_drop" => {
                let caps: Vec<String> = ld
                    .strings(value, &kp, &format!("`{kname}`"))
                    .into_iter()
                    .map(|(t, _)| t)
                    .collect();
                ld.cx.place(&field(kname), k.loc, value.loc);
                if kname == "cap_add" {
                    c.cap_add = Some(caps);
                } else {
                    c.cap_drop = Some(caps);
                }
            }
            "ports" => {
                if let Some(items) = ld.list(value, &kp, "`ports`") {
                    for (i, item) in items.iter().enumerate() {
                        port(ld, item, &index(&kp, i), &mut ports);
                    }
                }
            }
            "expose" => {
                for (text, loc) in ld.strings(value, &kp, "`expose`") {
                    let t = text.strip_suffix("/tcp").unwrap_or(&text);
                    match range(t) {
                        Some((a, b)) => {
                            for p in a..=b {
                                ports.push((PortMapping { port: p, target: None, publish: None, host_ip: None }, loc));
                            }
                        }
                        None => ld.error(&kp, loc, format!("invalid port `{text}` in `expose`: expected a port (1-65535) or a range, TCP only")),
                    }
                }
            }
            "depends_on" => {
                pod.depends_on = depends_on(ld, value, &kp, name, active, disabled);
                ld.cx
                    .place(&join(&pod_path, "depends_on"), k.loc, value.loc);
            }
            "healthcheck" => {
                c.healthcheck = healthcheck(ld, value, &kp);
                ld.cx.place(&field("healthcheck"), k.loc, value.loc);
            }
            "restart" => {
                let t = ld.text(value, &kp, "`restart`").unwrap_or_default();
                pod.restart = restart(ld, &t, &kp, value.loc);
                ld.cx.place(&join(&pod_path, "restart"), k.loc, value.loc);
            }
            "scale" => {
                pod.replicas = ld
                    .uint(value, &kp, "`scale`")
                    .and_then(|n| u32::try_from(n).ok());
                ld.cx.place(&join(&pod_path, "replicas"), k.loc, value.loc);
            }
            "deploy" => deploy(ld, value, &kp, &mut pod, &mut resources),
            "mem_limit" => resources.memory = memory(ld, value, &kp),
            "mem_reservation" => {
                resources.requests.get_or_insert_default().memory = memory(ld, value, &kp);
            }
            "cpus" => {
                if let Some(t) = ld.text(value, &kp, "`cpus`")
                    && t.trim() != "0"
                {
                    resources.cpu = Some(Quantity(t));
                }
            }
            "pids_limit" => {
                if let Some(t) = ld.text(value, &kp, "`pids_limit`") {
                    match t.trim().parse::<i64>() {
                        Ok(n) if n > 0 => resources.pids = u64::try_from(n).ok(),
                        Ok(_) => {} // 0 and -1 mean unlimited
                        Err(_) => ld.error(
                            &kp,
                            value.loc,
                            format!(
                                "wrong type for `pids_limit`: expected an integer, found `{t}`"
                            ),
                        ),
                    }
                }
            }
            "volumes" => {
                if let Some(items) = ld.list(value, &kp, "`volumes`") {
                    for (i, item) in items.iter().enumerate() {
                        let p = index(&kp, i);
                        if let Some(mnt) = volume_mount(ld, item, &p) {
                            ld.cx.place(
                                &index(&field("volumes"), mounts.len()),
                                item.loc,
                                item.loc,
                            );
                            mounts.push(mnt);
                        }
                    }
                }
            }
            "tmpfs" => {
                for (text, loc) in ld.strings(value, &kp, "`tmpfs`") {
                    let (target, opts) = text
                        .split_once(':')
                        .map_or((text.as_str(), None), |(t, o)| (t, Some(o)));
                    let mut size = None;
                    for opt in opts
                        .unwrap_or_default()
                        .split(',')
                        .filter(|o| !o.is_empty())
                    {
                        match opt.split_once('=') {
                            Some(("size", s)) => size = docker_bytes(s).ok().map(Quantity),
                            _ => ld.warn(&kp, loc, format!("the tmpfs option `{opt}` is ignored")),
                        }
                    }
                    ld.cx
                        .place(&index(&field("volumes"), mounts.len()), loc, loc);
                    mounts.push(MountSpec::Long(LongMountSpec {
                        kind: MountType::Tmpfs,
                        source: None,
                        target: target.to_string(),
                        read_only: None,
                        tmpfs: size.map(|s| TmpfsSpec { size: Some(s) }),
                    }));
                }
            }
            "secrets" | "configs" => {
                let uses = file_uses(ld, value, &kp, kname);
                ld.cx.place(&field(kname), k.loc, value.loc);
                if kname == "secrets" {
                    c.secrets = Some(uses);
                } else {
                    c.configs = Some(uses);
                }
            }
            "network_mode" => {
                let t = ld.text(value, &kp, "`network_mode`").unwrap_or_default();
                match t.as_str() {
                    "none" => pod.network_mode = Some(NetworkMode::None),
                    "bridge" | "default" => {}
                    other => ld.error(&kp, value.loc, format!("`network_mode: {other}` is not supported: a service is on the project network, or on none (`network_mode: none`)")),
                }
            }
            "networks" => networks(ld, value, &kp, k.loc),
            "develop" => develop(ld, value, &kp, name, &mut m.watch),
            "profiles" | "extends" => {}
            other if !known_key(other) => {
                let all: Vec<&str> = SERVICE_KEYS
                    .iter()
                    .chain(SERVICE_KEYS_2.iter())
                    .copied()
                    .collect();
                let message = match crate::manifest::convert::suggest(other, &all) {
                    Some(s) => format!(
                        "unknown key `{other}` in the service `{name}`; did you mean `{s}`?"
                    ),
                    None => format!("unknown key `{other}` in the service `{name}`"),
                };
                ld.error(&kp, k.loc, message);
            }
            other => ld.error(&kp, k.loc, format!("`{other}` is not supported yet")),
        }
    }
    if !has_image {
        if get(node, "build").is_none() && get(node, "image").is_none() {
            ld.error(
                &path,
                key.loc,
                format!("the service `{name}` has neither an `image` nor a `build`"),
            );
        }
    } else {
        m.images.insert(name.to_string(), image);
        c.image = Some(name.to_string());
    }
    if !env.is_empty() || !env_from_file.is_empty() {
        env_from_file.extend(env);
        c.env = Some(EnvSpec::Map(env_from_file));
    }
    // Compose reserves only what `reservations` (or `mem_reservation`) say: a limit alone
    // requests nothing, where rcompose (as Kubernetes) would request the limit, so that a
    // Compose file starts on a machine whatever its limits add up to, as under Docker
    if resources.cpu.is_some() || resources.memory.is_some() {
        let requests = resources.requests.get_or_insert_default();
        if resources.cpu.is_some() && requests.cpu.is_none() {
            requests.cpu = Some(Quantity("0".into()));
        }
        if resources.memory.is_some() && requests.memory.is_none() {
            requests.memory = Some(Quantity("0".into()));
        }
    }
    if resources != ResourcesSpec::default() {
        c.resources = Some(resources);
    }
    if !mounts.is_empty() {
        c.volumes = Some(mounts);
    }
    if !ports.is_empty() {
        let spath = join("services", name);
        ld.cx.place(&spath, key.loc, node.loc);
        let mut seen = BTreeSet::new();
        let mut list = Vec::new();
        for (p, loc) in ports {
            // an `expose`d port that is also published is listed once
            if p.publish.is_none() && !seen.insert((p.port, None::<u16>)) {
                continue;
            }
            if p.publish.is_none() && list.iter().any(|l: &PortMapping| l.port == p.port) {
                continue;
            }
            list.retain(|l: &PortMapping| !(l.port == p.port && l.publish.is_none()));
            let mut p = p;
            // a container port published twice (`8080:80`, `8081:80`): the second listens
            // on its host port number on the service address too, forwarding to the same
            // container port
            if let Some(publish) = p.publish
                && list.iter().any(|l| l.port == p.port)
                && !list.iter().any(|l| l.port == publish)
            {
                p.target = Some(p.port);
                p.port = publish;
            }
            ld.cx
                .place(&index(&join(&spath, "ports"), list.len()), loc, loc);
            list.push(p);
        }
        m.services.insert(
            name.to_string(),
            ServiceSpec {
                selector: BTreeMap::from([(SERVICE_LABEL.to_string(), name.to_string())]),
                ports: list.into_iter().map(PortSpec::Long).collect(),
                balance: None,
            },
        );
    }
    pod.containers = vec![c];
    m.pods.insert(name.to_string(), pod);
}

fn command(ld: &mut Loader<'_>, node: &Node, path: &str, what: &str) -> Option<CommandSpec> {
    match &node.kind {
        Kind::Null => None,
        Kind::Scalar(s) => Some(CommandSpec::Shell(s.text.clone())),
        Kind::Seq(items) => {
            let mut argv = Vec::new();
            for (i, item) in items.iter().enumerate() {
                argv.push(Text(ld.text(
                    item,
                    &index(path, i),
                    &format!("an item of `{what}`"),
                )?));
            }
            Some(CommandSpec::Argv(argv))
        }
        Kind::Map(_) => {
            ld.error(
                path,
                node.loc,
                format!("wrong type for `{what}`: expected a string or a list, found a mapping"),
            );
            None
        }
    }
}

fn environment(ld: &mut Loader<'_>, node: &Node, path: &str, env: &mut BTreeMap<String, Text>) {
    match &node.kind {
        Kind::Map(entries) => {
            for (k, v) in entries {
                match &v.kind {
                    Kind::Scalar(s) => {
                        env.insert(k.name.clone(), Text(s.text.clone()));
                    }
                    Kind::Null => {
                        if let Some(val) = ld.var(&k.name) {
                            env.insert(k.name.clone(), Text(val));
                        }
                    }
                    other => {
                        let found = other.describe();
                        ld.error(&join(path, &k.name), v.loc, format!("wrong type for the variable `{}` of `environment`: expected a string, number, boolean or null, found {found}", k.name));
                    }
                }
            }
        }
        Kind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let Some(text) = ld.text(item, &index(path, i), "an item of `environment`") else {
                    continue;
                };
                match text.split_once('=') {
                    Some((k, v)) => {
                        env.insert(k.to_string(), Text(v.to_string()));
                    }
                    None => {
                        if let Some(val) = ld.var(&text) {
                            env.insert(text, Text(val));
                        }
                    }
                }
            }
        }
        Kind::Null => {}
        Kind::Scalar(_) => ld.error(
            path,
            node.loc,
            "wrong type for `environment`: expected a mapping or a list, found a string".into(),
        ),
    }
}

fn env_files(ld: &mut Loader<'_>, node: &Node, path: &str, env: &mut BTreeMap<String, Text>) {
    let items: Vec<Node> = match &node.kind {
        Kind::Seq(items) => items.clone(),
        Kind::Null => Vec::new(),
        _ => vec![node.clone()],
    };
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let (file, required, loc) = match &item.kind {
            Kind::Scalar(s) => (s.text.clone(), true, item.loc),
            Kind::Map(_) => {
                ld.unknown_keys(
                    item,
                    &p,
                    &["path", "required", "format"],
                    "in an `env_file` entry",
                );
                let Some(f) =
                    get(item, "path").and_then(|f| ld.text(f, &join(&p, "path"), "`path`"))
                else {
                    ld.error(&p, item.loc, "an `env_file` entry needs a `path`".into());
                    continue;
                };
                let req = get(item, "required")
                    .and_then(|r| ld.boolean(r, &join(&p, "required"), "`required`"))
                    .unwrap_or(true);
                if let Some(fmt) = get(item, "format").and_then(scalar)
                    && fmt != "raw"
                {
                    ld.error(
                        &join(&p, "format"),
                        item.loc,
                        format!("unknown env_file `format` `{fmt}`"),
                    );
                }
                (f, req, item.loc)
            }
            other => {
                let found = other.describe();
                ld.error(
                    &p,
                    item.loc,
                    format!(
                        "wrong type for `env_file`: expected a path or a mapping, found {found}"
                    ),
                );
                continue;
            }
        };
        if let Some(pairs) = ld.env_file(Path::new(&file), (&p, loc), required) {
            for (k, v) in pairs {
                if let Some(v) = v {
                    env.insert(k, Text(v));
                }
            }
        }
    }
}

/// `a` or `a-b` -> the port range.
fn range(text: &str) -> Option<(u16, u16)> {
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a >= 1 && a <= b).then_some((a, b))
}

fn port(ld: &mut Loader<'_>, node: &Node, path: &str, out: &mut Vec<(PortMapping, Loc)>) {
    match &node.kind {
        Kind::Scalar(s) => {
            let text = s.text.trim();
            let (spec, proto) = text.split_once('/').unwrap_or((text, "tcp"));
            if proto != "tcp" {
                ld.error(path, node.loc, format!("the port `{text}` is `{proto}`: only TCP ports are supported (the balancer is a TCP proxy)"));
                return;
            }
            // [HOST_IP:][HOST_PORT:]CONTAINER_PORT, HOST_IP maybe `[v6]`
            let (ip, rest) = if let Some(r) = spec.strip_prefix('[') {
                match r.split_once("]:") {
                    Some((ip, rest)) => (Some(ip.to_string()), rest),
                    None => (None, spec),
                }
            } else {
                let parts: Vec<&str> = spec.split(':').collect();
                if parts.len() == 3 {
                    (Some(parts[0].to_string()), &spec[parts[0].len() + 1..])
                } else {
                    (None, spec)
                }
            };
            let (host, container) = match rest.rsplit_once(':') {
                Some((h, c)) => (Some(h), c),
                None => (None, rest),
            };
            let bad = |ld: &mut Loader<'_>| {
                ld.error(path, node.loc, format!("invalid port `{text}`: expected `[HOST_IP:][HOST_PORT:]CONTAINER_PORT` with ports 1-65535 (or ranges)"))
            };
            let Some((c1, c2)) = range(container) else {
                return bad(ld);
            };
            let host = host.filter(|h| !h.is_empty());
            match host {
                None => {
                    ld.warn(path, node.loc, format!("the port `{text}` has no host port: Compose publishes it on a random one, rcompose does not publish it (it is reachable from the other services)"));
                    for p in c1..=c2 {
                        out.push((
                            PortMapping {
                                port: p,
                                target: None,
                                publish: None,
                                host_ip: None,
                            },
                            node.loc,
                        ));
                    }
                }
                Some(h) => {
                    let Some((h1, h2)) = range(h) else {
                        return bad(ld);
                    };
                    if h2 - h1 != c2 - c1 {
                        ld.error(path, node.loc, format!("the port range `{text}` maps host and container ranges of different sizes: not supported"));
                        return;
                    }
                    for (hp, cp) in (h1..=h2).zip(c1..=c2) {
                        out.push((
                            PortMapping {
                                port: cp,
                                target: None,
                                publish: Some(hp),
                                host_ip: ip.clone(),
                            },
                            node.loc,
                        ));
                    }
                }
            }
        }
        Kind::Map(_) => {
            ld.unknown_keys(
                node,
                path,
                &[
                    "name",
                    "target",
                    "published",
                    "host_ip",
                    "protocol",
                    "mode",
                    "app_protocol",
                ],
                "in a port",
            );
            let Some(target) =
                get(node, "target").and_then(|t| ld.uint(t, &join(path, "target"), "`target`"))
            else {
                ld.error(path, node.loc, "a port needs a `target`".into());
                return;
            };
            let Some(target) = u16::try_from(target).ok().filter(|t| *t > 0) else {
                ld.error(
                    path,
                    node.loc,
                    format!("invalid `target` port `{target}`: expected 1-65535"),
                );
                return;
            };
            if let Some(p) = get(node, "protocol").and_then(scalar)
                && p != "tcp"
            {
                ld.error(
                    path,
                    node.loc,
                    format!("the port protocol `{p}` is not supported: only TCP"),
                );
                return;
            }
            let host_ip = get(node, "host_ip").and_then(scalar).map(str::to_string);
            match get(node, "published").and_then(scalar) {
                None | Some("") => {
                    ld.warn(path, node.loc, format!("the port `{target}` has no `published` port: Compose publishes it on a random one, rcompose does not publish it"));
                    out.push((
                        PortMapping {
                            port: target,
                            target: None,
                            publish: None,
                            host_ip: None,
                        },
                        node.loc,
                    ));
                }
                Some(text) => match range(text) {
                    Some((a, a2)) if a == a2 => out.push((
                        PortMapping {
                            port: target,
                            target: None,
                            publish: Some(a),
                            host_ip,
                        },
                        node.loc,
                    )),
                    _ => ld.error(
                        path,
                        node.loc,
                        format!("invalid `published` port `{text}`: expected one port (1-65535)"),
                    ),
                },
            }
        }
        other => {
            let found = other.describe();
            ld.error(
                path,
                node.loc,
                format!(
                    "wrong type for a port: expected a string, a number or a mapping, found {found}"
                ),
            );
        }
    }
}

fn depends_on(
    ld: &mut Loader<'_>,
    node: &Node,
    path: &str,
    me: &str,
    active: &BTreeMap<String, (Key, Node, PathBuf)>,
    disabled: &BTreeMap<String, Vec<String>>,
) -> Option<DependsOnSpec> {
    let mut out = BTreeMap::new();
    let check = |ld: &mut Loader<'_>, dep: &str, loc: Loc, required: bool| -> bool {
        if active.contains_key(dep) {
            return true;
        }
        if !required {
            return false;
        }
        match disabled.get(dep) {
            Some(profiles) => ld.error(path, loc, format!("the service `{me}` depends on `{dep}`, which is disabled: enable one of its profiles ({}) with `--profile`", profiles.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", "))),
            None => ld.error(path, loc, format!("the service `{me}` depends on the undefined service `{dep}`")),
        }
        false
    };
    match &node.kind {
        Kind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(dep) = ld.text(item, &index(path, i), "an item of `depends_on`")
                    && check(ld, &dep, item.loc, true)
                {
                    out.insert(
                        dep,
                        DependencySpec {
                            condition: Some(Condition::Started),
                        },
                    );
                }
            }
        }
        Kind::Map(entries) => {
            for (k, v) in entries {
                let p = join(path, &k.name);
                ld.unknown_keys(
                    v,
                    &p,
                    &["condition", "required", "restart"],
                    "in a dependency",
                );
                let condition = match get(v, "condition")
                    .and_then(|c| ld.text(c, &join(&p, "condition"), "`condition`"))
                    .as_deref()
                {
                    None | Some("service_started") => Condition::Started,
                    Some("service_healthy") => Condition::Healthy,
                    Some("service_completed_successfully") => Condition::Completed,
                    Some(other) => {
                        ld.error(&join(&p, "condition"), v.loc, format!("unknown condition `{other}`; expected `service_started`, `service_healthy` or `service_completed_successfully`"));
                        Condition::Started
                    }
                };
                let required = get(v, "required")
                    .and_then(|r| ld.boolean(r, &join(&p, "required"), "`required`"))
                    .unwrap_or(true);
                if let Some(r) = get(v, "restart")
                    && ld.boolean(r, &join(&p, "restart"), "`restart`") == Some(true)
                {
                    ld.warn(&join(&p, "restart"), r.loc, format!("`restart: true` is ignored: `{me}` is not restarted when `{}` is (use a watch rule with `cascade: true`)", k.name));
                }
                if check(ld, &k.name, k.loc, required) {
                    out.insert(
                        k.name.clone(),
                        DependencySpec {
                            condition: Some(condition),
                        },
                    );
                    ld.cx.place(
                        &join(&join(&join("pods", me), "depends_on"), &k.name),
                        k.loc,
                        v.loc,
                    );
                }
            }
        }
        Kind::Null => {}
        Kind::Scalar(_) => ld.error(
            path,
            node.loc,
            "wrong type for `depends_on`: expected a list or a mapping, found a string".into(),
        ),
    }
    (!out.is_empty()).then_some(DependsOnSpec::Map(out))
}

fn healthcheck(ld: &mut Loader<'_>, node: &Node, path: &str) -> Option<HealthcheckSpec> {
    let list = ld.map(node, path, "`healthcheck`")?;
    ld.unknown_keys(
        node,
        path,
        &[
            "test",
            "interval",
            "timeout",
            "retries",
            "start_period",
            "start_interval",
            "disable",
        ],
        "in `healthcheck`",
    );
    let mut h = HealthcheckSpec::default();
    for (k, v) in list {
        let p = join(path, &k.name);
        match k.name.as_str() {
            "test" => h.test = command(ld, v, &p, "test"),
            "interval" => h.interval = ld.text(v, &p, "`interval`"),
            "timeout" => h.timeout = ld.text(v, &p, "`timeout`"),
            "start_period" => h.start_period = ld.text(v, &p, "`start_period`"),
            "retries" => h.retries = ld.uint(v, &p, "`retries`").and_then(|n| u32::try_from(n).ok()),
            "disable" => h.disable = ld.boolean(v, &p, "`disable`"),
            "start_interval" => ld.warn(&p, k.loc, "`start_interval` is ignored: rcompose checks every 100 ms until the container is first healthy".into()),
            _ => {}
        }
    }
    Some(h)
}

fn restart(ld: &mut Loader<'_>, text: &str, path: &str, loc: Loc) -> Option<Restart> {
    match text {
        "no" | "\"no\"" | "false" => Some(Restart::Never),
        "always" | "unless-stopped" => Some(Restart::Always),
        "on-failure" => Some(Restart::OnFailure),
        t if t.starts_with("on-failure:") => {
            ld.warn(path, loc, format!("the retry limit of `{t}` is ignored: rcompose restarts with a backoff, without a limit"));
            Some(Restart::OnFailure)
        }
        other => {
            ld.error(path, loc, format!("unknown restart policy `{other}`; expected `no`, `always`, `on-failure[:N]` or `unless-stopped`"));
            None
        }
    }
}

fn deploy(
    ld: &mut Loader<'_>,
    node: &Node,
    path: &str,
    pod: &mut PodSpec,
    res: &mut ResourcesSpec,
) {
    let Some(list) = ld.map(node, path, "`deploy`") else {
        return;
    };
    ld.unknown_keys(
        node,
        path,
        &[
            "endpoint_mode",
            "labels",
            "mode",
            "placement",
            "replicas",
            "resources",
            "restart_policy",
            "rollback_config",
            "update_config",
        ],
        "in `deploy`",
    );
    for (k, v) in list {
        let p = join(path, &k.name);
        match k.name.as_str() {
            "replicas" => {
                if let Some(t) = ld.text(v, &p, "`replicas`") {
                    match t.trim().parse::<i64>() {
                        Ok(n) if n >= 0 => pod.replicas = u32::try_from(n).ok(),
                        Ok(n) => ld.error(
                            &p,
                            v.loc,
                            format!("`deploy.replicas` must be 0 or more, found `{n}`"),
                        ),
                        Err(_) => ld.error(
                            &p,
                            v.loc,
                            format!("wrong type for `replicas`: expected an integer, found `{t}`"),
                        ),
                    }
                }
            }
            "mode" => match scalar(v) {
                Some("replicated" | "replicated-job") => {}
                Some("global" | "global-job") => pod.replicas = Some(1),
                other => ld.error(
                    &p,
                    v.loc,
                    format!("unknown deploy mode `{}`", other.unwrap_or_default()),
                ),
            },
            "resources" => {
                ld.unknown_keys(v, &p, &["limits", "reservations"], "in `deploy.resources`");
                if let Some(lim) = get(v, "limits") {
                    let lp = join(&p, "limits");
                    ld.unknown_keys(
                        lim,
                        &lp,
                        &["cpus", "memory", "pids"],
                        "in `deploy.resources.limits`",
                    );
                    if let Some(c) =
                        get(lim, "cpus").and_then(|c| ld.text(c, &join(&lp, "cpus"), "`cpus`"))
                    {
                        res.cpu = Some(Quantity(c));
                    }
                    if let Some(mn) = get(lim, "memory") {
                        res.memory = memory(ld, mn, &join(&lp, "memory"));
                    }
                    if let Some(pn) = get(lim, "pids") {
                        res.pids = ld.uint(pn, &join(&lp, "pids"), "`pids`").filter(|n| *n > 0);
                    }
                }
                if let Some(rsv) = get(v, "reservations") {
                    // what the scheduler reserves on the node (rcompose's `requests`)
                    let rp = join(&p, "reservations");
                    ld.unknown_keys(
                        rsv,
                        &rp,
                        &["cpus", "memory", "devices", "generic_resources"],
                        "in `deploy.resources.reservations`",
                    );
                    let requests = res.requests.get_or_insert_default();
                    if let Some(c) =
                        get(rsv, "cpus").and_then(|c| ld.text(c, &join(&rp, "cpus"), "`cpus`"))
                    {
                        requests.cpu = Some(Quantity(c));
                    }
                    if let Some(mn) = get(rsv, "memory") {
                        requests.memory = memory(ld, mn, &join(&rp, "memory"));
                    }
                    for key in ["devices", "generic_resources"] {
                        if let Some((kk, _)) = entries(rsv).iter().find(|(kk, _)| kk.name == key) {
                            ld.error(
                                &join(&rp, key),
                                kk.loc,
                                format!("`{key}` reservations are not supported: rcompose gives containers no devices"),
                            );
                        }
                    }
                }
            }
            "restart_policy" => {
                ld.unknown_keys(
                    v,
                    &p,
                    &["condition", "delay", "max_attempts", "window"],
                    "in `restart_policy`",
                );
                if let Some(cnd) = get(v, "condition").and_then(scalar) {
                    pod.restart = match cnd {
                        "none" => Some(Restart::Never),
                        "on-failure" => Some(Restart::OnFailure),
                        "any" => Some(Restart::Always),
                        other => {
                            ld.error(&p, v.loc, format!("unknown restart condition `{other}`; expected `none`, `on-failure` or `any`"));
                            None
                        }
                    };
                }
                if let Some(d) = get(v, "delay").and_then(scalar) {
                    pod.backoff = Some(crate::manifest::BackoffSpec {
                        initial: Some(d.to_string()),
                        max: None,
                    });
                }
                for key in ["max_attempts", "window"] {
                    if let Some((kk, _)) = entries(v).iter().find(|(kk, _)| kk.name == key) {
                        ld.warn(&join(&p, key), kk.loc, format!("`{key}` is ignored: rcompose restarts with a backoff, without a limit"));
                    }
                }
            }
            "labels" | "placement" | "update_config" | "rollback_config" | "endpoint_mode" => {
                ld.warn(
                    &p,
                    k.loc,
                    format!("`deploy.{}` is ignored: it is for swarm clusters", k.name),
                );
            }
            _ => {}
        }
    }
}

fn memory(ld: &mut Loader<'_>, node: &Node, path: &str) -> Option<Quantity> {
    let t = ld.text(node, path, "a memory size")?;
    match docker_bytes(&t) {
        Ok(q) => Some(Quantity(q)),
        Err(e) => {
            ld.error(path, node.loc, e);
            None
        }
    }
}

/// Docker's memory sizes (`512m`, `1g`, `1.5GB`, `1024`: binary units, `m` = MiB) as an
/// rcompose quantity (`512Mi`, or bytes).
pub(crate) fn docker_bytes(text: &str) -> Result<String, String> {
    let t = text.trim().to_ascii_lowercase();
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let unit = unit.trim();
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => {
            return Err(format!(
                "invalid memory size `{text}`: expected a number with an optional unit `k`, `m`, `g` (binary, as Docker)"
            ));
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid memory size `{text}`"))?;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let bytes = (value * (1u64 << shift) as f64) as u64;
    for (suffix, s) in [("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes > 0 && bytes.is_multiple_of(1u64 << s) {
            return Ok(format!("{}{suffix}", bytes >> s));
        }
    }
    Ok(bytes.to_string())
}

fn volume_mount(ld: &mut Loader<'_>, node: &Node, path: &str) -> Option<MountSpec> {
    match &node.kind {
        Kind::Scalar(s) => {
            let parts: Vec<&str> = s.text.split(':').collect();
            let (src, dst, mode) = match parts.as_slice() {
                [dst] => {
                    ld.error(path, node.loc, format!("the anonymous volume `{dst}` is not supported: name it (`name:{dst}`, and declare `name` under the top-level `volumes`)"));
                    return None;
                }
                [src, dst] => (*src, *dst, None),
                [src, dst, mode] => (*src, *dst, Some(*mode)),
                _ => {
                    ld.error(
                        path,
                        node.loc,
                        format!(
                            "invalid volume `{}`: expected `SOURCE:TARGET[:MODE]`",
                            s.text
                        ),
                    );
                    return None;
                }
            };
            let src = home(ld, src);
            let mut ro = false;
            for m in mode
                .unwrap_or_default()
                .split(',')
                .filter(|m| !m.is_empty())
            {
                match m {
                    "ro" => ro = true,
                    "rw" => {}
                    other => ld.warn(
                        path,
                        node.loc,
                        format!("the volume option `{other}` is ignored"),
                    ),
                }
            }
            Some(MountSpec::Short(format!(
                "{src}:{dst}{}",
                if ro { ":ro" } else { "" }
            )))
        }
        Kind::Map(_) => {
            ld.unknown_keys(
                node,
                path,
                &[
                    "type",
                    "source",
                    "target",
                    "read_only",
                    "consistency",
                    "bind",
                    "volume",
                    "tmpfs",
                    "image",
                ],
                "in a volume",
            );
            let kind = get(node, "type").and_then(scalar).unwrap_or("volume");
            let kind = match kind {
                "bind" => MountType::Bind,
                "volume" => MountType::Volume,
                "tmpfs" => MountType::Tmpfs,
                other => {
                    ld.error(&join(path, "type"), node.loc, format!("the volume type `{other}` is not supported: expected `bind`, `volume` or `tmpfs`"));
                    return None;
                }
            };
            let target =
                get(node, "target").and_then(|t| ld.text(t, &join(path, "target"), "`target`"));
            let Some(target) = target else {
                ld.error(path, node.loc, "a volume needs a `target`".into());
                return None;
            };
            let source = get(node, "source")
                .and_then(scalar)
                .filter(|s| !s.is_empty())
                .map(|s| home(ld, s));
            if kind == MountType::Bind && source.is_none() {
                ld.error(
                    path,
                    node.loc,
                    "invalid mount config for type `bind`: `source` must not be empty".into(),
                );
                return None;
            }
            if kind == MountType::Volume && source.is_none() {
                ld.error(path, node.loc, format!("the anonymous volume at `{target}` is not supported: give it a `source` declared under the top-level `volumes`"));
                return None;
            }
            let read_only = get(node, "read_only")
                .and_then(|r| ld.boolean(r, &join(path, "read_only"), "`read_only`"));
            let mut tmpfs = None;
            if let Some(t) = get(node, "tmpfs") {
                let tp = join(path, "tmpfs");
                ld.unknown_keys(t, &tp, &["size", "mode"], "in `tmpfs`");
                if let Some(size) = get(t, "size").and_then(scalar) {
                    match docker_bytes(size) {
                        Ok(q) => {
                            tmpfs = Some(TmpfsSpec {
                                size: Some(Quantity(q)),
                            })
                        }
                        Err(e) => ld.error(&tp, t.loc, e),
                    }
                }
                if let Some((mk, _)) = entries(t).iter().find(|(k, _)| k.name == "mode") {
                    ld.warn(
                        &join(&tp, "mode"),
                        mk.loc,
                        "the tmpfs `mode` is ignored: a tmpfs has mode 1777".into(),
                    );
                }
            }
            for key in ["bind", "volume", "consistency", "image"] {
                if let Some((k, _)) = entries(node).iter().find(|(k, _)| k.name == key) {
                    ld.warn(
                        &join(path, key),
                        k.loc,
                        format!("the volume option `{key}` is ignored"),
                    );
                }
            }
            Some(MountSpec::Long(LongMountSpec {
                kind,
                source: if kind == MountType::Tmpfs {
                    None
                } else {
                    source
                },
                target,
                read_only,
                tmpfs,
            }))
        }
        other => {
            let found = other.describe();
            ld.error(
                path,
                node.loc,
                format!("wrong type for a volume: expected a string or a mapping, found {found}"),
            );
            None
        }
    }
}

/// `~/x` with `HOME` of the environment.
fn home(ld: &Loader<'_>, src: &str) -> String {
    match (src.strip_prefix('~'), ld.var("HOME")) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            format!("{home}{rest}")
        }
        _ => src.to_string(),
    }
}

fn file_uses(ld: &mut Loader<'_>, node: &Node, path: &str, kind: &str) -> Vec<FileUseSpec> {
    let Some(items) = ld.list(node, path, &format!("`{kind}`")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        match &item.kind {
            Kind::Scalar(s) => out.push(FileUseSpec::Short(s.text.clone())),
            Kind::Map(_) => {
                ld.unknown_keys(
                    item,
                    &p,
                    &["source", "target", "uid", "gid", "mode"],
                    &format!("in an item of `{kind}`"),
                );
                let Some(source) =
                    get(item, "source").and_then(|s| ld.text(s, &join(&p, "source"), "`source`"))
                else {
                    ld.error(&p, item.loc, "needs a `source`".into());
                    continue;
                };
                let num = |ld: &mut Loader<'_>, key: &str, octal: bool| -> Option<u32> {
                    let n = get(item, key)?;
                    let t = ld.text(n, &join(&p, key), key)?;
                    let parsed = if let Some(o) = t.strip_prefix("0o") {
                        u32::from_str_radix(o, 8).ok()
                    } else if octal && t.len() > 1 && t.starts_with('0') {
                        u32::from_str_radix(&t[1..], 8).ok()
                    } else {
                        t.parse().ok()
                    };
                    if parsed.is_none() {
                        ld.error(
                            &join(&p, key),
                            n.loc,
                            format!("invalid `{key}` `{t}`: expected a number"),
                        );
                    }
                    parsed
                };
                let spec = LongFileUseSpec {
                    source,
                    target: get(item, "target").and_then(scalar).map(str::to_string),
                    uid: num(ld, "uid", false),
                    gid: num(ld, "gid", false),
                    mode: num(ld, "mode", true),
                };
                out.push(FileUseSpec::Long(spec));
            }
            other => {
                let found = other.describe();
                ld.error(&p, item.loc, format!("wrong type for an item of `{kind}`: expected a name or a mapping, found {found}"));
            }
        }
    }
    out
}

fn networks(ld: &mut Loader<'_>, node: &Node, path: &str, key_loc: Loc) {
    if let Kind::Map(entries) = &node.kind {
        for (k, v) in entries {
            for (opt, _) in super::entries(v) {
                if matches!(
                    opt.name.as_str(),
                    "aliases" | "ipv4_address" | "ipv6_address" | "link_local_ips" | "mac_address"
                ) {
                    ld.error(&join(&join(path, &k.name), &opt.name), opt.loc, format!("`{}` of a service network is not supported: a service is reached by its name", opt.name));
                }
            }
        }
    }
    ld.warn(
        path,
        key_loc,
        "`networks` is ignored: every service is on the project's one network".into(),
    );
}

/// A Compose watch `ignore` pattern (relative to the watched path) as an rcompose one
/// (.gitignore syntax, relative to the project directory): a pattern with a `/` (or
/// starting with `./`) is anchored under the watched path; a bare name matches anywhere, in
/// both.
fn ignore_pattern(watched: &str, pattern: &str) -> String {
    let rest = pattern.strip_prefix("./").unwrap_or(pattern);
    let anchored = pattern.starts_with("./") || rest.trim_end_matches('/').contains('/');
    if !anchored || Path::new(watched).is_absolute() {
        return pattern.to_string();
    }
    let rest = rest.trim_start_matches('/');
    let base = watched.trim_start_matches("./").trim_end_matches('/');
    if base.is_empty() || base == "." {
        format!("/{rest}")
    } else {
        format!("/{base}/{rest}")
    }
}

fn develop(ld: &mut Loader<'_>, node: &Node, path: &str, svc: &str, watch: &mut Vec<WatchSpec>) {
    ld.unknown_keys(node, path, &["watch"], "in `develop`");
    let Some(w) = get(node, "watch") else { return };
    let wp = join(path, "watch");
    let Some(items) = ld.list(w, &wp, "`develop.watch`") else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let p = index(&wp, i);
        if ld.map(item, &p, "a watch rule").is_none() {
            continue;
        }
        ld.unknown_keys(
            item,
            &p,
            &[
                "action",
                "path",
                "target",
                "ignore",
                "include",
                "initial_sync",
                "exec",
            ],
            "in a watch rule",
        );
        let Some(action) =
            get(item, "action").and_then(|a| ld.text(a, &join(&p, "action"), "`action`"))
        else {
            ld.error(&p, item.loc, "a watch rule needs an `action`".into());
            continue;
        };
        let Some(wpath) = get(item, "path").and_then(|a| ld.text(a, &join(&p, "path"), "`path`"))
        else {
            ld.error(&p, item.loc, "a watch rule needs a `path`".into());
            continue;
        };
        let action = match action.as_str() {
            "sync" => WatchAction::Sync,
            "restart" => WatchAction::Restart,
            "rebuild" => {
                ld.error(&join(&p, "action"), item.loc, "the watch action `rebuild` is not supported: rcompose does not build images yet (an rcompose.yaml can `redeploy` layer directories)".into());
                continue;
            }
            "sync+restart" | "sync+exec" => {
                ld.error(&join(&p, "action"), item.loc, format!("the watch action `{action}` is not supported yet: use `sync` or `restart` (a restarted container loses synced files)"));
                continue;
            }
            other => {
                ld.error(&join(&p, "action"), item.loc, format!("unknown watch action `{other}`; expected `sync`, `restart`, `rebuild`, `sync+restart` or `sync+exec`"));
                continue;
            }
        };
        for key in ["include", "initial_sync", "exec"] {
            if let Some((k, _)) = entries(item).iter().find(|(k, _)| k.name == key) {
                ld.error(
                    &join(&p, key),
                    k.loc,
                    format!("`{key}` of a watch rule is not supported yet"),
                );
            }
        }
        let ignore = get(item, "ignore")
            .map(|n| ld.strings(n, &join(&p, "ignore"), "`ignore`"))
            .unwrap_or_default();
        let target = get(item, "target").and_then(|t| ld.text(t, &join(&p, "target"), "`target`"));
        let wi = watch.len();
        ld.cx.place(&index("watch", wi), item.loc, item.loc);
        watch.push(WatchSpec {
            paths: vec![wpath.clone()],
            action,
            pods: vec![svc.to_string()],
            ignore: ignore
                .into_iter()
                .map(|(t, _)| ignore_pattern(&wpath, &t))
                .collect(),
            target: if action == WatchAction::Sync {
                target
            } else {
                None
            },
            cascade: None,
            containers: Vec::new(),
        });
    }
}
