//! Cross-reference and value checks: the only way to a [`ValidManifest`]. Collects every
//! problem (with its dotted path) instead of stopping at the first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::manifest::Facts;
use crate::manifest::caps::{self, Cap};
use crate::manifest::convert::{Anchor, Issues, index, join, suggest};
use crate::manifest::subnet::Subnet;
use crate::manifest::valid::{
    Amount, Backoff, Capacity, Container, Dependency, FileSource, FileUse, Image, ImageBase, Layer,
    Mount, MountKind, Node, Pod, Port, Probe, ProbeAction, Resources, Security, Service, Update,
    ValidManifest, WatchEffect, WatchRule,
};
use crate::manifest::{
    Bytes, CommandSpec, Condition, ContainerSpec, CountOrPercent, DependsOnSpec, EnvSpec,
    FileSourceSpec, FileUseSpec, HOST_IMAGE, LayerSpec, LongFileUseSpec, Manifest, MilliCpu,
    MountSpec, MountType, NetworkMode, PodSpec, PortSpec, ProbeSpec, Restart, RuntimeKind,
    ServiceSpec, WatchAction, WatchSpec, shell,
};

/// Longest pod name: the hostname `<pod>-<replica>` must stay well under 64 characters.
pub(crate) const MAX_POD_NAME: usize = 40;
/// Longest name of anything else (a DNS label).
pub(crate) const MAX_NAME: usize = 63;

/// Checks a Compose resource name (volumes, configs, secrets, pod volumes), which becomes a
/// file name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most `max` characters.
fn resource_name(name: &str, max: usize) -> Result<(), String> {
    let ok = name
        .bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_alphanumeric() || (i > 0 && matches!(b, b'_' | b'.' | b'-')));
    if name.is_empty() {
        Err("it is empty".into())
    } else if !ok {
        Err("use letters, digits, `_`, `.` and `-`, starting with a letter or digit".into())
    } else if name.len() > max {
        Err(format!("it is longer than {max} characters"))
    } else {
        Ok(())
    }
}

/// Checks a DNS-label name: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most `max` characters.
pub(crate) fn dns_label(name: &str, max: usize) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if !ok_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(
            "use lower-case letters, digits and `-`, starting and ending with a letter or digit"
                .into(),
        );
    }
    if name.len() > max {
        return Err(format!("it is longer than {max} characters"));
    }
    Ok(())
}

fn project_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Kubernetes label syntax: `[prefix/]name`, name up to 63 of `[A-Za-z0-9._-]`, alphanumeric at
/// both ends; values the same (or empty).
fn label_part(text: &str) -> bool {
    text.len() <= MAX_NAME
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && text
            .bytes()
            .next()
            .is_none_or(|b| b.is_ascii_alphanumeric())
        && text
            .bytes()
            .last()
            .is_none_or(|b| b.is_ascii_alphanumeric())
}

fn label_key(key: &str) -> bool {
    let name = key.rsplit_once('/').map_or(key, |(prefix, name)| {
        if prefix.is_empty() || prefix.len() > 253 {
            ""
        } else {
            name
        }
    });
    !name.is_empty() && label_part(name)
}

pub(crate) fn did_you_mean<'a>(word: &str, names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    suggest(word, &names)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// Validates `m`, reporting problems into `issues`; the result is meaningful only when no
/// problem was reported.
pub(crate) fn validate(m: &Manifest, issues: &mut Issues, facts: &Facts<'_>) -> ValidManifest {
    if let Some(name) = &m.name
        && !project_name(name)
    {
        issues.report(
                "name",
                Anchor::Value,
                format!("invalid project name `{name}`: use lower-case letters, digits, `-` and `_`, starting with a letter or digit"),
            );
    }
    let images = images(m, issues);
    let pods = m
        .pods
        .iter()
        .map(|(name, spec)| (name.clone(), pod(m, name, spec, issues, facts)))
        .collect::<BTreeMap<_, _>>();
    pod_graph(&pods, issues);
    let services = services(m, &pods, issues);
    for name in m.volumes.keys() {
        if let Err(why) = resource_name(name, MAX_NAME) {
            issues.report(
                &join("volumes", name),
                Anchor::Key,
                format!("invalid volume name `{name}`: {why}"),
            );
        }
    }
    let subnet = network(m, &pods, &services, issues, facts);
    let (nodes, capacity) = nodes(m, issues);
    let complete = nodes.len() == m.nodes.len() && !issues.any_broken(|p| p.starts_with("nodes"));
    for (name, pod) in &pods {
        placement(name, pod, (&nodes, complete), issues);
    }
    let faults = faults(m, &services, &nodes, issues);
    let watch = m
        .watch
        .iter()
        .enumerate()
        .filter_map(|(i, spec)| watch_rule(m, &images, &pods, spec, i, issues))
        .collect();
    ValidManifest {
        watch,
        name: m.name.clone(),
        subnet,
        images,
        pods,
        services,
        volumes: m.volumes.keys().cloned().collect(),
        configs: file_sources(&m.configs, "configs", issues, facts),
        secrets: file_sources(&m.secrets, "secrets", issues, facts),
        nodes,
        capacity,
        faults,
    }
}

/// The faults, parsed, with every pod, service and node they name declared.
fn faults(
    m: &Manifest,
    services: &BTreeMap<String, Service>,
    nodes: &BTreeMap<String, Node>,
    issues: &mut Issues,
) -> BTreeMap<String, crate::manifest::Fault> {
    let mut out = BTreeMap::new();
    for (name, spec) in &m.faults {
        let path = join("faults", name);
        if let Err(why) = crate::manifest::fault::check_name(name) {
            issues.report(&path, Anchor::Key, why);
        }
        let parsed = crate::manifest::Fault::parse(spec);
        let mut known = true;
        if let Err(problems) = &parsed {
            for (key, why) in problems {
                issues.report(
                    &join(&path, key),
                    Anchor::Value,
                    format!("{why} (fault `{name}`)"),
                );
            }
        }
        // what the scopes that parse name must exist, whatever else is wrong
        for (key, text) in [("target", Some(&spec.target)), ("peer", spec.peer.as_ref())] {
            let Some(Ok(scope)) = text.map(|t| t.parse::<crate::manifest::fault::Scope>()) else {
                continue;
            };
            if let Err(why) = crate::manifest::fault::check_scope(
                &scope,
                m.pods.keys(),
                services.keys(),
                nodes.keys(),
            ) {
                issues.report(
                    &join(&path, key),
                    Anchor::Value,
                    format!("{why} (fault `{name}`)"),
                );
                known = false;
            }
        }
        if let (Ok(fault), true) = (parsed, known) {
            out.insert(name.clone(), fault);
        }
    }
    out
}

/// The declared nodes (names, capacities, labels) and the implicit node's capacity override.
fn nodes(m: &Manifest, issues: &mut Issues) -> (BTreeMap<String, Node>, Capacity) {
    let mut nodes = BTreeMap::new();
    for (name, spec) in &m.nodes {
        let path = join("nodes", name);
        if let Err(why) = dns_label(name, MAX_NAME) {
            issues.report(
                &path,
                Anchor::Key,
                format!("invalid node name `{name}`: {why}"),
            );
        }
        let cpu = MilliCpu::parse(&spec.cpu.0)
            .map_err(|why| issues.report(&join(&path, "cpu"), Anchor::Value, why))
            .ok();
        let memory = Bytes::parse(&spec.memory.0)
            .map_err(|why| issues.report(&join(&path, "memory"), Anchor::Value, why))
            .ok();
        labels(
            &spec.labels,
            &join(&path, "labels"),
            &format!("node `{name}`"),
            issues,
        );
        if let (Some(cpu), Some(memory)) = (cpu, memory) {
            let labels = spec.labels.clone();
            nodes.insert(
                name.clone(),
                Node {
                    cpu,
                    memory,
                    labels,
                },
            );
        }
    }
    let mut capacity = Capacity::default();
    if let Some(spec) = &m.capacity {
        if !m.nodes.is_empty() {
            issues.report(
                "capacity",
                Anchor::Key,
                "`capacity` sets the capacity of the machine as the one node, but `nodes` are declared: give each node its `cpu` and `memory` instead".into(),
            );
        }
        if let Some(cpu) = &spec.cpu {
            capacity.cpu = MilliCpu::parse(&cpu.0)
                .map_err(|why| issues.report("capacity.cpu", Anchor::Value, why))
                .ok();
        }
        if let Some(memory) = &spec.memory {
            capacity.memory = Bytes::parse(&memory.0)
                .map_err(|why| issues.report("capacity.memory", Anchor::Value, why))
                .ok();
        }
    }
    (nodes, capacity)
}

/// A pod's `node_selector` must pick a declared node, and one replica's requests must fit
/// the largest node it picks (else the replicas could never start).
/// `complete` says every declared node was valid (else a node that failed its checks
/// could be the one the selector meant).
fn placement(
    name: &str,
    pod: &Pod,
    (nodes, complete): (&BTreeMap<String, Node>, bool),
    issues: &mut Issues,
) {
    let path = join(&join("pods", name), "node_selector");
    if pod.node_selector.is_empty() && nodes.is_empty() {
        return;
    }
    if nodes.is_empty() {
        issues.report(
            &path,
            Anchor::Key,
            format!("pod `{name}` has a `node_selector`, but no `nodes` are declared: declare nodes with these labels, or remove the selector"),
        );
        return;
    }
    let wanted = pod
        .node_selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let picked: Vec<(&String, &Node)> = nodes
        .iter()
        .filter(|(_, n)| {
            pod.node_selector
                .iter()
                .all(|(k, v)| n.labels.get(k) == Some(v))
        })
        .collect();
    if picked.is_empty() {
        if !complete {
            return;
        }
        let have = nodes
            .iter()
            .map(|(n, node)| {
                let labels = node
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                if labels.is_empty() {
                    format!("`{n}` (no labels)")
                } else {
                    format!("`{n}` ({labels})")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        issues.report(
            &path,
            Anchor::Key,
            format!("the `node_selector` of pod `{name}` ({wanted}) matches no node: the nodes are {have}"),
        );
        return;
    }
    if !complete {
        return;
    }
    let requests = pod.requests();
    let largest = |f: fn(&Node) -> u64| {
        picked
            .iter()
            .max_by(|a, b| f(a.1).cmp(&f(b.1)).then(b.0.cmp(a.0)))
            .map(|(n, node)| ((*n).clone(), f(node)))
    };
    let rpath = join("pods", name);
    if let (Some(cpu), Some((node, most))) = (requests.cpu, largest(|n| n.cpu.0))
        && cpu.0 > most
    {
        issues.report(
            &rpath,
            Anchor::Key,
            format!("a replica of pod `{name}` requests {cpu} cpu, more than any node it may run on has (the most: {} on `{node}`)", MilliCpu(most)),
        );
    }
    if let (Some(memory), Some((node, most))) = (requests.memory, largest(|n| n.memory.0))
        && memory.0 > most
    {
        issues.report(
            &rpath,
            Anchor::Key,
            format!("a replica of pod `{name}` requests {memory} of memory, more than any node it may run on has (the most: {} on `{node}`)", Bytes(most)),
        );
    }
}

/// Checks label keys and values (pods' `labels`, nodes' `labels`, `node_selector`).
fn labels(map: &BTreeMap<String, String>, path: &str, owner: &str, issues: &mut Issues) {
    for (key, value) in map {
        let lpath = join(path, key);
        if !label_key(key) {
            issues.report(&lpath, Anchor::Key, format!("invalid label key `{key}` in {owner}: use up to 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit, with an optional `prefix/`"));
        }
        if !label_part(value) {
            issues.report(&lpath, Anchor::Value, format!("invalid label value `{value}` in {owner}: use up to 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit"));
        }
    }
}

/// The network's subnet, if the manifest names one: it must parse, hold an address for the
/// gateway, every pod replica on the network and every service, and overlap no host route
/// (asked of `facts`).
fn network(
    m: &Manifest,
    pods: &BTreeMap<String, Pod>,
    services: &BTreeMap<String, Service>,
    issues: &mut Issues,
    facts: &Facts<'_>,
) -> Option<Subnet> {
    let text = m.network.as_ref()?.subnet.as_ref()?;
    let subnet = match text.parse::<Subnet>() {
        Ok(s) => s,
        Err(e) => {
            issues.report(
                "network.subnet",
                Anchor::Value,
                format!("invalid subnet: {e}"),
            );
            return None;
        }
    };
    let replicas: u32 = pods
        .values()
        .filter(|p| p.network_mode == NetworkMode::Project)
        .map(|p| p.replicas)
        .sum();
    let services_n = u32::try_from(services.len()).unwrap_or(u32::MAX);
    let needed = replicas.saturating_add(services_n).saturating_add(1);
    if needed > subnet.hosts() {
        issues.report(
            "network.subnet",
            Anchor::Value,
            format!(
                "subnet `{subnet}` has {} host addresses; the project needs {needed} (the gateway, {replicas} pod replicas, {services_n} services)",
                subnet.hosts()
            ),
        );
    }
    if let Some(route) = (facts.subnet_conflict)(subnet, m.name.as_deref()) {
        issues.report(
            "network.subnet",
            Anchor::Value,
            format!("subnet `{subnet}` overlaps {route}; choose another, or leave `subnet` out to get a free one"),
        );
    }
    Some(subnet)
}

fn images(m: &Manifest, issues: &mut Issues) -> BTreeMap<String, Image> {
    let mut out = BTreeMap::new();
    for (name, spec) in &m.images {
        let path = join("images", name);
        if name == HOST_IMAGE {
            issues.report(
                &path,
                Anchor::Key,
                "image `host` is builtin (the host's root filesystem) and cannot be declared"
                    .into(),
            );
        } else if let Err(why) = dns_label(name, MAX_NAME) {
            issues.report(
                &path,
                Anchor::Key,
                format!("invalid image name `{name}`: {why}"),
            );
        }
        if let Some(from) = &spec.from
            && from != HOST_IMAGE
            && !m.images.contains_key(from)
        {
            issues.report(
                &join(&path, "from"),
                Anchor::Value,
                format!(
                    "image `{name}` is built from `{from}`, which is not declared in `images`{}",
                    did_you_mean(from, m.images.keys())
                ),
            );
        }
        let bases: Vec<(&str, &String)> = [
            ("from", &spec.from),
            ("rootfs", &spec.rootfs),
            ("archive", &spec.archive),
            ("ref", &spec.reference),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
        if let [(first, _), (second, _), ..] = bases.as_slice() {
            issues.report(
                &join(&path, second),
                Anchor::Key,
                format!("image `{name}` sets both `{first}` and `{second}`; choose one"),
            );
        }
        for (key, value) in &bases {
            if *key != "from" && value.trim().is_empty() {
                issues.report(
                    &join(&path, key),
                    Anchor::Value,
                    format!("`{key}` of image `{name}` is empty"),
                );
            }
        }
        if let Some(reference) = &spec.reference
            && let Err(why) = check_reference(reference)
        {
            issues.report(
                &join(&path, "ref"),
                Anchor::Value,
                format!("invalid image reference `{reference}` in image `{name}`: {why}"),
            );
        }
        if spec.allow_setuid.is_some() && spec.reference.is_none() && spec.archive.is_none() {
            issues.report(
                &join(&path, "allow_setuid"),
                Anchor::Key,
                format!(
                    "`allow_setuid` of image `{name}` applies to `archive` and `ref` images only"
                ),
            );
        }
        if spec.pull.is_some() && spec.reference.is_none() {
            issues.report(
                &join(&path, "pull"),
                Anchor::Key,
                format!("`pull` of image `{name}` needs a `ref` to pull"),
            );
        }
        let base = match bases.first() {
            Some(("rootfs", v)) => ImageBase::Rootfs((*v).clone()),
            Some(("archive", v)) => ImageBase::Archive((*v).clone()),
            Some(("ref", v)) => ImageBase::Ref((*v).clone()),
            Some((_, v)) => ImageBase::From((*v).clone()),
            None => ImageBase::From(HOST_IMAGE.into()),
        };
        let mut layers = Vec::new();
        for (i, layer) in spec.layers.iter().enumerate() {
            let lpath = index(&join(&path, "layers"), i);
            let (source, target) = match layer {
                LayerSpec::Path(source) => (source.clone(), "/".to_string()),
                LayerSpec::Mount(mount) => (
                    mount.source.clone(),
                    mount.target.clone().unwrap_or_else(|| "/".into()),
                ),
            };
            if source.is_empty() {
                issues.report(
                    &lpath,
                    Anchor::Value,
                    format!("a layer of image `{name}` has an empty source"),
                );
            }
            if !target.starts_with('/') {
                issues.report(
                    &join(&lpath, "target"),
                    Anchor::Value,
                    format!("layer target `{target}` of image `{name}` must be an absolute path"),
                );
            }
            layers.push(Layer { source, target });
        }
        out.insert(
            name.clone(),
            Image {
                base,
                pull: spec.pull,
                allow_setuid: spec.allow_setuid.unwrap_or(false),
                layers,
            },
        );
    }
    // `from` chains that come back to themselves.
    let mut reported = BTreeSet::new();
    for start in m.images.keys() {
        let mut chain = vec![start.as_str()];
        let mut current = start.as_str();
        while let Some(next) = m.images.get(current).and_then(|s| s.from.as_deref()) {
            if next == HOST_IMAGE || !m.images.contains_key(next) {
                break;
            }
            if let Some(at) = chain.iter().position(|c| *c == next) {
                let mut cycle: Vec<&str> = chain[at..].to_vec();
                // Start the printed cycle at its smallest name, so it is reported once.
                let min = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
                cycle.rotate_left(min);
                if reported.insert(cycle.clone()) {
                    let first = cycle[0];
                    let mut text = cycle.join(" -> ");
                    text.push_str(" -> ");
                    text.push_str(first);
                    issues.report(
                        &join(&join("images", first), "from"),
                        Anchor::Value,
                        format!("image `{first}` is built from itself: `{text}`"),
                    );
                }
                break;
            }
            chain.push(next);
            current = next;
        }
    }
    out
}

fn pod(m: &Manifest, name: &str, spec: &PodSpec, issues: &mut Issues, facts: &Facts<'_>) -> Pod {
    let path = join("pods", name);
    if let Err(why) = dns_label(name, MAX_POD_NAME) {
        let why = if why.starts_with("it is longer") {
            format!("{why} (replica hostnames `<pod>-<n>` must stay short)")
        } else {
            why
        };
        issues.report(
            &path,
            Anchor::Key,
            format!("invalid pod name `{name}`: {why}"),
        );
    }
    let owner = format!("pod `{name}`");
    labels(&spec.labels, &join(&path, "labels"), &owner, issues);
    labels(
        &spec.node_selector,
        &join(&path, "node_selector"),
        &owner,
        issues,
    );
    let mut depends_on = BTreeMap::new();
    let dpath = join(&path, "depends_on");
    let deps: Vec<(String, Condition)> = match &spec.depends_on {
        None => Vec::new(),
        Some(DependsOnSpec::List(names)) => {
            let mut seen = BTreeSet::new();
            for (i, dep) in names.iter().enumerate() {
                if !seen.insert(dep) {
                    issues.report(
                        &index(&dpath, i),
                        Anchor::Value,
                        format!("pod `{name}` lists dependency `{dep}` twice"),
                    );
                }
            }
            names
                .iter()
                .map(|n| (n.clone(), Condition::Started))
                .collect()
        }
        Some(DependsOnSpec::Map(map)) => map
            .iter()
            .map(|(n, d)| (n.clone(), d.condition.unwrap_or(Condition::Started)))
            .collect(),
    };
    for (dep, condition) in deps {
        match m.pods.get(&dep) {
            None => issues.report(
                &join(&dpath, &dep),
                Anchor::Key,
                format!(
                    "pod `{name}` depends on `{dep}`, which is not a pod{}",
                    did_you_mean(&dep, m.pods.keys())
                ),
            ),
            Some(target) => {
                let probed = target.containers.iter().any(|c| {
                    c.readiness.is_some()
                        || c.startup.is_some()
                        || c.healthcheck
                            .as_ref()
                            .is_some_and(|h| h.disable != Some(true))
                });
                if condition == Condition::Healthy && !probed {
                    issues.report(
                        &join(&dpath, &dep),
                        Anchor::Key,
                        format!("pod `{name}` waits for `{dep}` to be healthy, but no container of `{dep}` has a `readiness` or `startup` probe or a `healthcheck`"),
                    );
                }
                if condition == Condition::Completed && target.restart == Some(Restart::Always) {
                    issues.report(
                        &join(&dpath, &dep),
                        Anchor::Key,
                        format!("pod `{name}` waits for `{dep}` to complete, but `{dep}` has `restart: always` and never completes"),
                    );
                }
            }
        }
        depends_on.insert(dep, Dependency { condition });
    }
    let cpath = join(&path, "containers");
    if spec.containers.is_empty() {
        issues.report(
            &cpath,
            Anchor::Key,
            format!("pod `{name}` has no containers"),
        );
    }
    // init containers and containers share one name space (their cgroups, logs and
    // `exec -c` name them alike)
    let mut seen = BTreeSet::new();
    let mut check = |list: &[ContainerSpec], key: &str, issues: &mut Issues| -> Vec<Container> {
        let lpath = join(&path, key);
        list.iter()
            .enumerate()
            .map(|(i, c)| {
                let path = index(&lpath, i);
                if !c.name.is_empty() && !seen.insert(c.name.clone()) {
                    issues.report(
                        &join(&path, "name"),
                        Anchor::Value,
                        format!("duplicate container name `{}` in pod `{name}`", c.name),
                    );
                }
                container(m, (name, spec), c, &path, issues, facts)
            })
            .collect()
    };
    let init_containers = check(&spec.init_containers, "init_containers", issues);
    let containers = check(&spec.containers, "containers", issues);
    // an external runtime gets no terminal yet (it would need its console socket)
    if let Some(runtime) = spec.runtime.filter(|r| *r != RuntimeKind::Builtin) {
        let lists = [
            ("init_containers", &spec.init_containers),
            ("containers", &spec.containers),
        ];
        for (key, list) in lists {
            for (i, c) in list.iter().enumerate() {
                if c.tty == Some(true) {
                    issues.report(
                        &join(&index(&join(&path, key), i), "tty"),
                        Anchor::Key,
                        format!("container `{name}.{}` asks for `tty`, which runtime `{}` does not support yet; use the builtin runtime", c.name, runtime.as_str()),
                    );
                }
            }
        }
    }
    for vname in spec.volumes.keys() {
        if let Err(why) = resource_name(vname, MAX_NAME) {
            issues.report(
                &join(&join(&path, "volumes"), vname),
                Anchor::Key,
                format!("invalid volume name `{vname}` in pod `{name}`: {why}"),
            );
        }
    }
    Pod {
        replicas: spec.replicas.unwrap_or(1),
        labels: spec.labels.clone(),
        depends_on,
        restart: spec.restart.unwrap_or(Restart::Never),
        runtime: spec.runtime.unwrap_or_default(),
        network_mode: spec.network_mode.unwrap_or_default(),
        backoff: backoff(spec, name, &path, issues),
        update: update(spec, name, &path, issues),
        volumes: spec.volumes.keys().cloned().collect(),
        init_containers,
        containers,
        node_selector: spec.node_selector.clone(),
    }
}

fn container(
    m: &Manifest,
    (pod, pod_spec): (&str, &PodSpec),
    c: &ContainerSpec,
    path: &str,
    issues: &mut Issues,
    facts: &Facts<'_>,
) -> Container {
    let label = format!("{pod}.{}", c.name);
    if let Err(why) = dns_label(&c.name, MAX_NAME) {
        issues.report(
            &join(path, "name"),
            Anchor::Value,
            format!("invalid container name `{}` in pod `{pod}`: {why}", c.name),
        );
    }
    let image = c.image.clone().unwrap_or_else(|| HOST_IMAGE.into());
    if image != HOST_IMAGE && !m.images.contains_key(&image) {
        issues.report(
            &join(path, "image"),
            Anchor::Value,
            format!(
                "container `{label}` uses image `{image}`, which is not declared in `images`{}",
                did_you_mean(&image, m.images.keys())
            ),
        );
    }
    let argv = |spec: &Option<CommandSpec>, key: &str, issues: &mut Issues| {
        let words = match spec.as_ref()? {
            CommandSpec::Argv(argv) => argv.iter().map(|t| t.0.clone()).collect(),
            CommandSpec::Shell(text) => shell::split(text).unwrap_or_else(|why| {
                issues.report(
                    &join(path, key),
                    Anchor::Value,
                    format!("cannot split the {key} of container `{label}` into words: {why}"),
                );
                vec![text.clone()]
            }),
        };
        Some(words)
    };
    let entrypoint = argv(&c.entrypoint, "entrypoint", issues);
    let command = argv(&c.command, "command", issues);
    if command.as_ref().is_some_and(Vec::is_empty) && entrypoint.is_none() {
        issues.report(
            &join(path, "command"),
            Anchor::Value,
            format!("the command of container `{label}` is empty"),
        );
    }
    let has_config = image_has_config(m, &image);
    let runs_something = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| !v.is_empty());
    let command_broken = issues.any_broken(|b| b == join(path, "command"));
    if !has_config && c.command.is_none() && !runs_something(&entrypoint) && !command_broken {
        // Named as in the file: `pod.name`, or `pod[i]` when the name is missing too.
        let shown = if c.name.is_empty() {
            match path.rsplit_once('.') {
                Some((_, tail)) => match tail.strip_prefix("containers") {
                    Some(i) => format!("{pod}{i}"),
                    None => format!("{pod}.{tail}"),
                },
                None => label.clone(),
            }
        } else {
            label.clone()
        };
        issues.report(
            path,
            Anchor::Key,
            format!(
                "missing field `command` in container `{shown}` (image `{image}` has no \
                 default command: only archive and registry images have one)"
            ),
        );
    }
    let mut env = BTreeMap::new();
    let epath = join(path, "env");
    match &c.env {
        None => {}
        Some(EnvSpec::Map(map)) => {
            for (k, v) in map {
                env.insert(k.clone(), v.0.clone());
            }
        }
        Some(EnvSpec::List(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item.split_once('=') {
                    Some((k, v)) => {
                        if env.insert(k.to_string(), v.to_string()).is_some() {
                            issues.report(&index(&epath, i), Anchor::Value, format!("environment variable `{k}` of container `{label}` is set twice"));
                        }
                    }
                    None => issues.report(
                        &index(&epath, i),
                        Anchor::Value,
                        format!("environment item `{item}` of container `{label}` has no `=`; write `{item}=value`"),
                    ),
                }
            }
        }
    }
    for key in env.keys() {
        if key.is_empty() || key.contains(['=', '\0']) {
            issues.report(
                &join(&epath, key),
                Anchor::Key,
                format!("invalid environment variable name `{key}` in container `{label}`"),
            );
        }
    }
    if let Some(dir) = &c.working_dir
        && !dir.starts_with('/')
    {
        issues.report(
            &join(path, "working_dir"),
            Anchor::Value,
            format!("`working_dir` of container `{label}` must be an absolute path, found `{dir}`"),
        );
    }
    let mut resources = Resources::default();
    if let Some(r) = &c.resources {
        let rpath = join(path, "resources");
        if let Some(cpu) = &r.cpu {
            match MilliCpu::parse(&cpu.0) {
                Ok(v) => resources.cpu = Some(v),
                Err(why) => issues.report(&join(&rpath, "cpu"), Anchor::Value, why),
            }
        }
        if let Some(memory) = &r.memory {
            match Bytes::parse(&memory.0) {
                Ok(v) => resources.memory = Some(v),
                Err(why) => issues.report(&join(&rpath, "memory"), Anchor::Value, why),
            }
        }
        if let Some(req) = &r.requests {
            let qpath = join(&rpath, "requests");
            if let Some(cpu) = &req.cpu {
                match MilliCpu::parse_request(&cpu.0) {
                    Ok(v) => resources.requests.cpu = Some(v),
                    Err(why) => issues.report(&join(&qpath, "cpu"), Anchor::Value, why),
                }
            }
            if let Some(memory) = &req.memory {
                match Bytes::parse_request(&memory.0) {
                    Ok(v) => resources.requests.memory = Some(v),
                    Err(why) => issues.report(&join(&qpath, "memory"), Anchor::Value, why),
                }
            }
            if let (Some(request), Some(limit)) = (resources.requests.cpu, resources.cpu)
                && request > limit
            {
                issues.report(
                    &join(&qpath, "cpu"),
                    Anchor::Value,
                    format!("the cpu request of container `{label}` ({request}) is above its limit ({limit}): a request must not exceed the limit"),
                );
            }
            if let (Some(request), Some(limit)) = (resources.requests.memory, resources.memory)
                && request > limit
            {
                issues.report(
                    &join(&qpath, "memory"),
                    Anchor::Value,
                    format!("the memory request of container `{label}` ({request}) is above its limit ({limit}): a request must not exceed the limit"),
                );
            }
        }
        // Kubernetes: a resource with a limit and no request requests its limit
        resources.requests.cpu = resources.requests.cpu.or(resources.cpu);
        resources.requests.memory = resources.requests.memory.or(resources.memory);
        if r.pids == Some(0) {
            issues.report(
                &join(&rpath, "pids"),
                Anchor::Value,
                format!("`pids` of container `{label}` must be 1 or more"),
            );
        }
        resources.pids = r.pids;
    }
    if let Some(user) = &c.user {
        let (u, g) = user.split_once(':').unwrap_or((user, "x"));
        let word = |w: &str| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if !word(u) || !word(g) {
            issues.report(
                &join(path, "user"),
                Anchor::Value,
                format!(
                    "invalid user `{user}` in container `{label}`: use `uid`, `uid:gid`, `name` or `name:group`"
                ),
            );
        }
    }
    let security = security(c, &label, path, issues);
    let stop_signal = match c
        .stop_signal
        .as_deref()
        .map(crate::manifest::quantity::parse_signal)
    {
        None => "SIGTERM".to_owned(),
        Some(Ok((name, _))) => name,
        Some(Err(why)) => {
            issues.report(
                &join(path, "stop_signal"),
                Anchor::Value,
                format!("{why} (container `{label}`)"),
            );
            "SIGTERM".to_owned()
        }
    };
    let stop_grace_period = match c
        .stop_grace_period
        .as_deref()
        .map(crate::manifest::quantity::parse_duration)
    {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(why)) => {
            issues.report(
                &join(path, "stop_grace_period"),
                Anchor::Value,
                format!("{why} (container `{label}`)"),
            );
            None
        }
    };
    let mounts = mounts(m, pod_spec, c, &label, path, issues, facts);
    let (configs, secrets) = files(m, c, &label, path, issues);
    let (readiness, liveness, startup) = probes(c, &label, path, issues);
    Container {
        name: c.name.clone(),
        image,
        entrypoint,
        command,
        user: c.user.clone(),
        env,
        working_dir: c.working_dir.clone(),
        resources,
        read_only: c.read_only.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        stop_signal,
        stop_grace_period,
        security,
        mounts,
        configs,
        secrets,
        readiness,
        liveness,
        startup,
    }
}

/// The restart delays of pod `name`: 100 ms doubling up to 10 s unless `backoff` says
/// otherwise; `max` must not be below `initial`.
fn update(spec: &PodSpec, name: &str, path: &str, issues: &mut Issues) -> Update {
    let upath = join(path, "update");
    let Some(u) = &spec.update else {
        return Update::DEFAULT;
    };
    let label = format!("pod `{name}`");
    let amount = |value: &Option<CountOrPercent>,
                  default: Amount,
                  key: &str,
                  issues: &mut Issues| {
        let bad = |issues: &mut Issues, text: &str| {
            issues.report(
                &join(&upath, key),
                Anchor::Value,
                format!("`{key}` of the update of {label} must be a number of replicas or a percentage from 0% to 100%, found `{text}`"),
            );
            default
        };
        match value {
            None => default,
            Some(CountOrPercent::Count(n)) => Amount::Count(*n),
            Some(CountOrPercent::Percent(text)) => match text
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<u32>().ok())
            {
                Some(p) if p <= 100 => Amount::Percent(p),
                _ => bad(issues, text),
            },
        }
    };
    let max_surge = amount(&u.max_surge, Update::DEFAULT.max_surge, "max_surge", issues);
    let max_unavailable = amount(
        &u.max_unavailable,
        Update::DEFAULT.max_unavailable,
        "max_unavailable",
        issues,
    );
    let zero = |a: Amount| matches!(a, Amount::Count(0) | Amount::Percent(0));
    if zero(max_surge) && zero(max_unavailable) {
        issues.report(
            &join(&upath, "max_unavailable"),
            Anchor::Value,
            format!("`max_surge` and `max_unavailable` of the update of {label} are both 0: no replica could ever be replaced"),
        );
    }
    let duration = |text: &Option<String>, default: Duration, key: &str, issues: &mut Issues| {
        setting_duration(text, default, &join(&upath, key), &label, issues)
    };
    let min_ready = duration(&u.min_ready, Update::DEFAULT.min_ready, "min_ready", issues);
    let progress_deadline = duration(
        &u.progress_deadline,
        Update::DEFAULT.progress_deadline,
        "progress_deadline",
        issues,
    );
    if progress_deadline.is_zero() {
        issues.report(
            &join(&upath, "progress_deadline"),
            Anchor::Value,
            format!("`progress_deadline` of the update of {label} must be more than 0"),
        );
    } else if progress_deadline <= min_ready {
        issues.report(
            &join(&upath, "progress_deadline"),
            Anchor::Value,
            format!(
                "`progress_deadline` of the update of {label} must be longer than its `min_ready`"
            ),
        );
    }
    Update {
        max_surge,
        max_unavailable,
        min_ready,
        progress_deadline,
    }
}

/// A pod setting's duration at `path` (`default` when absent or invalid, which is reported
/// with `label`).
fn setting_duration(
    text: &Option<String>,
    default: Duration,
    path: &str,
    label: &str,
    issues: &mut Issues,
) -> Duration {
    match text
        .as_deref()
        .map(crate::manifest::quantity::parse_duration)
    {
        None => default,
        Some(Ok(d)) => d,
        Some(Err(why)) => {
            issues.report(path, Anchor::Value, format!("{why} ({label})"));
            default
        }
    }
}

fn backoff(spec: &PodSpec, name: &str, path: &str, issues: &mut Issues) -> Backoff {
    let bpath = join(path, "backoff");
    let label = format!("pod `{name}`");
    let b = spec.backoff.clone().unwrap_or_default();
    let parse = |text: &Option<String>, default: Duration, key: &str, issues: &mut Issues| {
        setting_duration(text, default, &join(&bpath, key), &label, issues)
    };
    let initial = parse(&b.initial, Backoff::DEFAULT.initial, "initial", issues);
    let max = parse(&b.max, Backoff::DEFAULT.max, "max", issues);
    if max < initial {
        issues.report(
            &join(&bpath, "max"),
            Anchor::Value,
            format!("`max` of the backoff of {label} is below its `initial`"),
        );
    }
    Backoff { initial, max }
}

/// Kubernetes' probe defaults.
const PROBE_PERIOD: Duration = Duration::from_secs(10);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Compose's health check defaults.
const HEALTHCHECK_INTERVAL: Duration = Duration::from_secs(30);
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(30);

type Probes = (Option<Probe>, Option<Probe>, Option<Probe>);

/// The container's readiness, liveness and startup probes, from its probe keys or its
/// Compose `healthcheck` (a readiness and a liveness probe), never both.
fn probes(c: &ContainerSpec, label: &str, path: &str, issues: &mut Issues) -> Probes {
    let readiness = c
        .readiness
        .as_ref()
        .and_then(|p| probe(p, "readiness", label, path, issues));
    let liveness = c
        .liveness
        .as_ref()
        .and_then(|p| probe(p, "liveness", label, path, issues));
    let startup = c
        .startup
        .as_ref()
        .and_then(|p| probe(p, "startup", label, path, issues));
    let Some(h) = &c.healthcheck else {
        return (readiness, liveness, startup);
    };
    let hpath = join(path, "healthcheck");
    if c.readiness.is_some() || c.liveness.is_some() {
        issues.report(
            &hpath,
            Anchor::Key,
            format!(
                "container `{label}` has both a `healthcheck` and `readiness`/`liveness` probes; keep one (a healthcheck is a readiness and a liveness probe)"
            ),
        );
        return (readiness, liveness, startup);
    }
    if h.disable == Some(true) {
        return (None, None, startup);
    }
    let argv: Option<Vec<String>> = match &h.test {
        None => {
            issues.report(
                &hpath,
                Anchor::Key,
                format!("missing field `test` in the `healthcheck` of container `{label}`"),
            );
            None
        }
        Some(CommandSpec::Shell(text)) => Some(vec!["/bin/sh".into(), "-c".into(), text.clone()]),
        Some(CommandSpec::Argv(words)) => {
            let words: Vec<&str> = words.iter().map(|t| t.0.as_str()).collect();
            match words.split_first() {
                Some((&"NONE", _)) => return (None, None, startup),
                Some((&"CMD", rest)) if !rest.is_empty() => {
                    Some(rest.iter().map(ToString::to_string).collect())
                }
                Some((&"CMD-SHELL", rest)) if !rest.is_empty() => {
                    Some(vec!["/bin/sh".into(), "-c".into(), rest.join(" ")])
                }
                _ => {
                    issues.report(
                        &join(&hpath, "test"),
                        Anchor::Value,
                        format!(
                            "invalid `test` in the `healthcheck` of container `{label}`: expected `[CMD, program, args...]`, `[CMD-SHELL, \"shell command\"]`, `[NONE]` or a string"
                        ),
                    );
                    None
                }
            }
        }
    };
    let interval = duration_or(
        &h.interval,
        HEALTHCHECK_INTERVAL,
        "interval",
        &hpath,
        label,
        issues,
    );
    let timeout = duration_or(
        &h.timeout,
        HEALTHCHECK_TIMEOUT,
        "timeout",
        &hpath,
        label,
        issues,
    );
    let start = duration_or(
        &h.start_period,
        Duration::ZERO,
        "start_period",
        &hpath,
        label,
        issues,
    );
    let retries = threshold(h.retries, 3, "retries", &hpath, label, issues);
    let Some(argv) = argv else {
        return (readiness, liveness, startup);
    };
    let ready = Probe {
        action: ProbeAction::Exec(argv),
        period: interval,
        timeout,
        initial_delay: Duration::ZERO,
        failure_threshold: retries,
        success_threshold: 1,
    };
    // the liveness side waits out `start_period`, as Compose counts no failure in it
    let live = Probe {
        initial_delay: start,
        ..ready.clone()
    };
    (Some(ready), Some(live), startup)
}

/// A duration key of a probe or healthcheck: its value, else `default`; must not be zero
/// unless `default` is.
fn duration_or(
    text: &Option<String>,
    default: Duration,
    key: &str,
    path: &str,
    label: &str,
    issues: &mut Issues,
) -> Duration {
    let Some(text) = text else {
        return default;
    };
    match crate::manifest::quantity::parse_duration(text) {
        Ok(d) if d.is_zero() && !default.is_zero() => {
            issues.report(
                &join(path, key),
                Anchor::Value,
                format!("`{key}` of container `{label}` must be more than 0"),
            );
            default
        }
        Ok(d) => d,
        Err(why) => {
            issues.report(
                &join(path, key),
                Anchor::Value,
                format!("{why} (container `{label}`)"),
            );
            default
        }
    }
}

fn threshold(
    value: Option<u32>,
    default: u32,
    key: &str,
    path: &str,
    label: &str,
    issues: &mut Issues,
) -> u32 {
    match value {
        Some(0) => {
            issues.report(
                &join(path, key),
                Anchor::Value,
                format!("`{key}` of container `{label}` must be 1 or more"),
            );
            default
        }
        Some(n) => n,
        None => default,
    }
}

fn probe(p: &ProbeSpec, kind: &str, label: &str, path: &str, issues: &mut Issues) -> Option<Probe> {
    let ppath = join(path, kind);
    let mut actions = Vec::new();
    if let Some(cmd) = &p.exec {
        let argv = match cmd {
            CommandSpec::Argv(words) => words.iter().map(|t| t.0.clone()).collect(),
            CommandSpec::Shell(text) => shell::split(text).unwrap_or_else(|why| {
                issues.report(
                    &join(&ppath, "exec"),
                    Anchor::Value,
                    format!("cannot split the `exec` of the {kind} probe of container `{label}` into words: {why}"),
                );
                vec![text.clone()]
            }),
        };
        if argv.is_empty() {
            issues.report(
                &join(&ppath, "exec"),
                Anchor::Value,
                format!("the `exec` of the {kind} probe of container `{label}` is empty"),
            );
        }
        actions.push(("exec", ProbeAction::Exec(argv)));
    }
    if let Some(h) = &p.http {
        let path_text = h.path.clone().unwrap_or_else(|| "/".into());
        if !path_text.starts_with('/')
            || path_text.contains(|c: char| c.is_whitespace() || c.is_control())
        {
            issues.report(
                &join(&join(&ppath, "http"), "path"),
                Anchor::Value,
                format!("invalid path `{path_text}` of the {kind} probe of container `{label}`: it starts with `/` and has no spaces"),
            );
        }
        actions.push((
            "http",
            ProbeAction::Http {
                port: h.port,
                path: path_text,
            },
        ));
    }
    if let Some(t) = &p.tcp {
        actions.push(("tcp", ProbeAction::Tcp { port: t.port }));
    }
    let action = match actions.len() {
        0 => {
            // an `http` or `tcp` that failed to parse was reported already
            if !issues.any_broken(|b| b.starts_with(&ppath)) {
                issues.report(
                    &ppath,
                    Anchor::Key,
                    format!("the {kind} probe of container `{label}` needs one of `exec`, `http` or `tcp`"),
                );
            }
            return None;
        }
        1 => actions.pop()?.1,
        _ => {
            let names: Vec<String> = actions.iter().map(|(n, _)| format!("`{n}`")).collect();
            issues.report(
                &ppath,
                Anchor::Key,
                format!(
                    "the {kind} probe of container `{label}` has {}; keep one",
                    names.join(" and ")
                ),
            );
            return None;
        }
    };
    let success_threshold = threshold(
        p.success_threshold,
        1,
        "success_threshold",
        &ppath,
        label,
        issues,
    );
    if success_threshold != 1 && kind != "readiness" {
        issues.report(
            &join(&ppath, "success_threshold"),
            Anchor::Value,
            format!("`success_threshold` of the {kind} probe of container `{label}` must be 1 (as in Kubernetes)"),
        );
    }
    Some(Probe {
        action,
        period: duration_or(&p.period, PROBE_PERIOD, "period", &ppath, label, issues),
        timeout: duration_or(&p.timeout, PROBE_TIMEOUT, "timeout", &ppath, label, issues),
        initial_delay: duration_or(
            &p.initial_delay,
            Duration::ZERO,
            "initial_delay",
            &ppath,
            label,
            issues,
        ),
        failure_threshold: threshold(
            p.failure_threshold,
            3,
            "failure_threshold",
            &ppath,
            label,
            issues,
        ),
        success_threshold,
    })
}

/// The configs and secrets a container mounts: names checked against the top-level
/// declarations, targets made absolute (configs at `/<name>`, secrets under /run/secrets),
/// modes defaulted (0444, 0400).
fn files(
    m: &Manifest,
    c: &ContainerSpec,
    label: &str,
    path: &str,
    issues: &mut Issues,
) -> (Vec<FileUse>, Vec<FileUse>) {
    let mut out = (Vec::new(), Vec::new());
    for (key, uses, declared, slot) in [
        ("configs", &c.configs, &m.configs, &mut out.0),
        ("secrets", &c.secrets, &m.secrets, &mut out.1),
    ] {
        let secret = key == "secrets";
        let kind = &key[..key.len() - 1];
        for (j, spec) in uses.iter().flatten().enumerate() {
            let ipath = index(&join(path, key), j);
            let long = match spec {
                FileUseSpec::Short(name) => LongFileUseSpec {
                    source: name.clone(),
                    ..LongFileUseSpec::default()
                },
                FileUseSpec::Long(l) => l.clone(),
            };
            let name = &long.source;
            if !declared.contains_key(name) {
                issues.report(
                    &ipath,
                    Anchor::Value,
                    format!(
                        "container `{label}` uses {kind} `{name}`, which is not declared in `{key}`{}",
                        did_you_mean(name, declared.keys())
                    ),
                );
                continue;
            }
            let target = match (&long.target, secret) {
                (Some(t), _) if t.starts_with('/') => t.clone(),
                (Some(t), true) => format!("/run/secrets/{t}"),
                (Some(t), false) => {
                    issues.report(
                        &ipath,
                        Anchor::Value,
                        format!(
                            "target `{t}` of config `{name}` in container `{label}` must be an absolute path"
                        ),
                    );
                    continue;
                }
                (None, true) => format!("/run/secrets/{name}"),
                (None, false) => format!("/{name}"),
            };
            if target.split('/').any(|p| p == ".." || p == ".") || target.ends_with('/') {
                issues.report(
                    &ipath,
                    Anchor::Value,
                    format!(
                        "target `{target}` of {kind} `{name}` in container `{label}` must name a file, without `.` or `..`"
                    ),
                );
                continue;
            }
            slot.push(FileUse {
                source: name.clone(),
                target,
                uid: long.uid.unwrap_or(0),
                gid: long.gid.unwrap_or(0),
                mode: long.mode.unwrap_or(if secret { 0o400 } else { 0o444 }),
            });
        }
    }
    out
}

/// Top-level configs or secrets: exactly one source each, files and variables present.
fn file_sources(
    specs: &BTreeMap<String, FileSourceSpec>,
    key: &str,
    issues: &mut Issues,
    facts: &Facts<'_>,
) -> BTreeMap<String, FileSource> {
    let kind = &key[..key.len() - 1];
    let mut out = BTreeMap::new();
    for (name, spec) in specs {
        let path = join(key, name);
        if let Err(why) = resource_name(name, MAX_NAME) {
            issues.report(
                &path,
                Anchor::Key,
                format!("invalid {kind} name `{name}`: {why}"),
            );
        }
        let source = match (&spec.file, &spec.environment, &spec.content) {
            (Some(f), None, None) => {
                if !(facts.path_exists)(f) {
                    issues.report(
                        &join(&path, "file"),
                        Anchor::Value,
                        format!("file `{f}` of {kind} `{name}` does not exist"),
                    );
                }
                FileSource::File(f.clone())
            }
            (None, Some(v), None) => {
                if !(facts.env_set)(v) {
                    issues.report(
                        &join(&path, "environment"),
                        Anchor::Value,
                        format!(
                            "{kind} `{name}` comes from environment variable `{v}`, which is not set"
                        ),
                    );
                }
                FileSource::Environment(v.clone())
            }
            (None, None, Some(text)) => FileSource::Content(text.clone()),
            _ => {
                issues.report(
                    &path,
                    Anchor::Key,
                    format!(
                        "{kind} `{name}` needs exactly one of `file`, `environment` and `content`"
                    ),
                );
                continue;
            }
        };
        out.insert(name.clone(), source);
    }
    out
}

/// The container's mounts from its `volumes`: short forms expanded, sources checked (bind
/// sources through `facts`), targets absolute and unique.
fn mounts(
    m: &Manifest,
    pod: &PodSpec,
    c: &ContainerSpec,
    label: &str,
    path: &str,
    issues: &mut Issues,
    facts: &Facts<'_>,
) -> Vec<Mount> {
    let mut out: Vec<Mount> = Vec::new();
    let vpath = join(path, "volumes");
    for (j, spec) in c.volumes.iter().flatten().enumerate() {
        let ipath = index(&vpath, j);
        let mut report = |message: String| issues.report(&ipath, Anchor::Value, message);
        let (kind, target, read_only) = match spec {
            MountSpec::Short(text) => {
                let parts: Vec<&str> = text.split(':').collect();
                let (source, target, mode) = match parts.as_slice() {
                    [s, t] => (*s, *t, None),
                    [s, t, mode] => (*s, *t, Some(*mode)),
                    _ => {
                        report(format!(
                            "invalid mount `{text}` in container `{label}`: write `SOURCE:TARGET` or `SOURCE:TARGET:ro` (anonymous volumes are not supported: name one under `volumes`)"
                        ));
                        continue;
                    }
                };
                let read_only = match mode {
                    None | Some("rw") => false,
                    Some("ro") => true,
                    Some(other) => {
                        report(format!(
                            "invalid mount mode `{other}` in `{text}` of container `{label}`: expected `ro` or `rw`"
                        ));
                        continue;
                    }
                };
                let kind = if source.starts_with(['.', '/', '~']) {
                    MountKind::Bind(source.to_owned())
                } else if pod.volumes.contains_key(source) {
                    MountKind::EmptyDir(source.to_owned())
                } else {
                    MountKind::Volume(source.to_owned())
                };
                (kind, target.to_owned(), read_only)
            }
            MountSpec::Long(l) => {
                let source = l.source.clone();
                let kind = match (l.kind, source) {
                    (MountType::Tmpfs, None) => {
                        let size = l.tmpfs.as_ref().and_then(|t| t.size.as_ref());
                        match size.map(|q| Bytes::parse(&q.0)).transpose() {
                            Ok(size) => MountKind::Tmpfs(size),
                            Err(why) => {
                                report(why);
                                continue;
                            }
                        }
                    }
                    (MountType::Tmpfs, Some(_)) => {
                        report(format!(
                            "a `tmpfs` mount of container `{label}` takes no `source`"
                        ));
                        continue;
                    }
                    (_, None) => {
                        report(format!(
                            "a mount of container `{label}` needs a `source` (only `tmpfs` has none)"
                        ));
                        continue;
                    }
                    (MountType::Bind, Some(s)) => MountKind::Bind(s),
                    (MountType::Volume, Some(s)) => MountKind::Volume(s),
                    (MountType::EmptyDir, Some(s)) => MountKind::EmptyDir(s),
                };
                if l.tmpfs.is_some() && !matches!(kind, MountKind::Tmpfs(_)) {
                    report(format!(
                        "`tmpfs` options on a mount of container `{label}` that is not a tmpfs"
                    ));
                }
                (kind, l.target.clone(), l.read_only.unwrap_or(false))
            }
        };
        match &kind {
            MountKind::Bind(source) => {
                if source.starts_with('~') {
                    report(format!(
                        "mount source `{source}` of container `{label}`: `~` is not expanded; write the path"
                    ));
                } else if !(facts.path_exists)(source) {
                    report(format!(
                        "mount source `{source}` of container `{label}` does not exist"
                    ));
                }
            }
            MountKind::Volume(name) if !m.volumes.contains_key(name) => {
                let mut known: Vec<&String> = m.volumes.keys().collect();
                known.extend(pod.volumes.keys());
                report(format!(
                    "container `{label}` mounts volume `{name}`, which is declared neither in `volumes` nor in the pod's `volumes`{}",
                    did_you_mean(name, known.into_iter())
                ));
            }
            MountKind::EmptyDir(name) if !pod.volumes.contains_key(name) => {
                report(format!(
                    "container `{label}` mounts `empty_dir` `{name}`, which its pod does not declare in `volumes`{}",
                    did_you_mean(name, pod.volumes.keys())
                ));
            }
            _ => {}
        }
        let clean = target.starts_with('/')
            && target != "/"
            && !target.split('/').any(|part| part == ".." || part == ".");
        if !clean {
            report(format!(
                "mount target `{target}` of container `{label}` must be an absolute path other than `/`, without `.` or `..`"
            ));
        } else if out.iter().any(|o| o.target == target) {
            report(format!(
                "two mounts of container `{label}` have the target `{target}`"
            ));
        }
        out.push(Mount {
            kind,
            target,
            read_only,
        });
    }
    out
}

/// The capability set of a container from `privileged`, `cap_add` and `cap_drop`; every
/// unknown name is reported (with the closest known one).
fn security(c: &ContainerSpec, label: &str, path: &str, issues: &mut Issues) -> Security {
    let mut parse = |key: &str, names: &Option<Vec<String>>| -> Vec<Cap> {
        let mut caps = Vec::new();
        for (j, name) in names.iter().flatten().enumerate() {
            match Cap::parse(name) {
                Ok(cap) => caps.push(cap),
                Err(close) => issues.report(
                    &index(&join(path, key), j),
                    Anchor::Value,
                    format!(
                        "unknown capability `{name}` in `{key}` of container `{label}`{}",
                        close.map_or_else(
                            || " (see capabilities(7); names may omit `CAP_`)".to_owned(),
                            |s| format!("; did you mean `{s}`?")
                        )
                    ),
                ),
            }
        }
        caps
    };
    let add = parse("cap_add", &c.cap_add);
    let drop = parse("cap_drop", &c.cap_drop);
    let privileged = c.privileged.unwrap_or(false);
    Security {
        privileged,
        capabilities: if privileged {
            caps::ALL
        } else {
            caps::effective(&add, &drop)
        },
    }
}

/// Whether the image chain of `image` ends at an image with a config (an archive or a
/// registry image), which can supply the command.
fn image_has_config(m: &Manifest, image: &str) -> bool {
    let mut current = image;
    for _ in 0..=m.images.len() {
        let Some(spec) = m.images.get(current) else {
            return false;
        };
        if spec.archive.is_some() || spec.reference.is_some() {
            return true;
        }
        match &spec.from {
            Some(next) if spec.rootfs.is_none() => current = next,
            _ => return false,
        }
    }
    false
}

/// A quick syntax check of a registry reference (the full parse happens at pull time):
/// `[registry/]repository[:tag][@sha256:hex]`, lowercase repository, no spaces.
fn check_reference(reference: &str) -> Result<(), String> {
    if reference
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("it contains spaces or control characters".into());
    }
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        let hex = d
            .strip_prefix("sha256:")
            .ok_or("the digest must start with `sha256:`")?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err("a sha256 digest has 64 lowercase hex digits".into());
        }
    }
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let repo_end = name[slash..].rfind(':').map_or(name.len(), |i| slash + i);
    let (repo, tag) = (&name[..repo_end], name.get(repo_end + 1..));
    if repo.is_empty() {
        return Err("the repository name is empty".into());
    }
    let path = match repo.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
        _ => repo,
    };
    if path.is_empty()
        || !path.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        })
    {
        return Err(
            "repository path components are lowercase letters, digits, `.`, `_` and `-`".into(),
        );
    }
    if let Some(tag) = tag
        && (tag.is_empty()
            || tag.len() > 128
            || !tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
    {
        return Err(format!("invalid tag `{tag}`"));
    }
    Ok(())
}

/// Reports every dependency cycle once, as its full path starting at its smallest name.
fn pod_graph(pods: &BTreeMap<String, Pod>, issues: &mut Issues) {
    let mut reported = BTreeSet::new();
    for start in pods.keys() {
        let mut stack: Vec<&str> = Vec::new();
        let mut done = BTreeSet::new();
        visit(start, pods, &mut stack, &mut done, &mut reported);
    }
    for cycle in reported {
        let first = cycle[0];
        let second = cycle.get(1).copied().unwrap_or(first);
        let mut text = cycle.join(" -> ");
        text.push_str(" -> ");
        text.push_str(first);
        let message = if cycle.len() == 1 {
            format!("pod `{first}` depends on itself: `{text}`")
        } else {
            format!("dependency cycle between pods: `{text}`")
        };
        issues.report(
            &join(&join(&join("pods", first), "depends_on"), second),
            Anchor::Key,
            message,
        );
    }
}

fn visit<'a>(
    node: &'a str,
    pods: &'a BTreeMap<String, Pod>,
    stack: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
    reported: &mut BTreeSet<Vec<&'a str>>,
) {
    if let Some(at) = stack.iter().position(|n| *n == node) {
        let mut cycle = stack[at..].to_vec();
        let min = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
        cycle.rotate_left(min);
        reported.insert(cycle);
        return;
    }
    if done.contains(node) {
        return;
    }
    let Some(pod) = pods.get(node) else { return };
    stack.push(node);
    for dep in pod.depends_on.keys() {
        visit(dep, pods, stack, done, reported);
    }
    stack.pop();
    done.insert(node);
}

fn services(
    m: &Manifest,
    pods: &BTreeMap<String, Pod>,
    issues: &mut Issues,
) -> BTreeMap<String, Service> {
    let mut out = BTreeMap::new();
    let mut published: BTreeMap<u16, String> = BTreeMap::new();
    for (name, spec) in &m.services {
        let path = join("services", name);
        if let Err(why) = dns_label(name, MAX_NAME) {
            issues.report(
                &path,
                Anchor::Key,
                format!("invalid service name `{name}`: {why}"),
            );
        }
        selector(name, spec, pods, &path, issues);
        let mut ports = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, p) in spec.ports.iter().enumerate() {
            let ppath = index(&join(&path, "ports"), i);
            let Some(port) = port(name, p, &ppath, issues) else {
                continue;
            };
            if !seen.insert(port.port) {
                issues.report(
                    &ppath,
                    Anchor::Value,
                    format!("service `{name}` lists port {} twice", port.port),
                );
            }
            if let Some(host) = port.publish
                && let Some(other) = published.insert(host, name.clone())
            {
                issues.report(&ppath, Anchor::Value, format!("host port {host} is published by both service `{other}` and service `{name}`"));
            }
            ports.push(port);
        }
        out.insert(
            name.clone(),
            Service {
                selector: spec.selector.clone(),
                ports,
                balance: spec.balance.unwrap_or_default(),
            },
        );
    }
    out
}

fn selector(
    name: &str,
    spec: &ServiceSpec,
    pods: &BTreeMap<String, Pod>,
    path: &str,
    issues: &mut Issues,
) {
    let spath = join(path, "selector");
    let shown = spec
        .selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    if spec.selector.is_empty() {
        issues.report(
            &spath,
            Anchor::Key,
            format!(
                "service `{name}` has an empty selector; give it labels that pick at least one pod"
            ),
        );
    } else if issues.any_broken(|b| {
        b == "pods"
            || b.strip_prefix("pods.").is_some_and(|rest| {
                !rest.contains(['.', '[']) || rest.split('.').nth(1) == Some("labels")
            })
    }) {
        // A pod or its labels failed to parse: whether the selector matches is unknown.
    } else if !pods.values().any(|pod| {
        spec.selector
            .iter()
            .all(|(k, v)| pod.labels.get(k) == Some(v))
    }) {
        issues.report(
            &spath,
            Anchor::Key,
            format!("service `{name}` selects no pod: no pod has all of the labels `{shown}`"),
        );
    }
}

fn port(service: &str, spec: &PortSpec, path: &str, issues: &mut Issues) -> Option<Port> {
    let zero = |issues: &mut Issues| {
        issues.report(
            path,
            Anchor::Value,
            format!("port 0 of service `{service}` is not a valid port; use 1 to 65535"),
        );
    };
    let port = match spec {
        PortSpec::Number(n) => Port {
            port: *n,
            target: *n,
            publish: None,
            host_ip: None,
        },
        PortSpec::Long(l) => {
            let host_ip = match &l.host_ip {
                None => None,
                Some(text) => match text.parse::<std::net::Ipv4Addr>() {
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        issues.report(
                            &join(path, "host_ip"),
                            Anchor::Value,
                            format!("invalid host_ip `{text}` of service `{service}`: expected an IPv4 address such as 127.0.0.1 or 0.0.0.0"),
                        );
                        return None;
                    }
                },
            };
            if host_ip.is_some() && l.publish.is_none() {
                issues.report(
                    &join(path, "host_ip"),
                    Anchor::Key,
                    format!("`host_ip` of service `{service}` needs `publish`: it is the address a published port binds"),
                );
                return None;
            }
            Port {
                port: l.port,
                target: l.target.unwrap_or(l.port),
                publish: l.publish,
                host_ip,
            }
        }
        PortSpec::Short(text) => {
            let bare = text.strip_suffix("/tcp").unwrap_or(text);
            let number = |s: &str| s.parse::<u16>().ok();
            let parsed = match bare.split(':').collect::<Vec<_>>().as_slice() {
                [one] => number(one).map(|p| Port {
                    port: p,
                    target: p,
                    publish: None,
                    host_ip: None,
                }),
                [host, container] => number(host).zip(number(container)).map(|(h, c)| Port {
                    port: c,
                    target: c,
                    publish: Some(h),
                    host_ip: None,
                }),
                [ip, host, container] => ip
                    .parse::<std::net::Ipv4Addr>()
                    .ok()
                    .zip(number(host).zip(number(container)))
                    .map(|(ip, (h, c))| Port {
                        port: c,
                        target: c,
                        publish: Some(h),
                        host_ip: Some(ip),
                    }),
                _ => None,
            };
            let Some(parsed) = parsed else {
                let hint = if text.ends_with("/udp") {
                    "; only tcp is supported"
                } else {
                    ""
                };
                issues.report(
                    path,
                    Anchor::Value,
                    format!("invalid port `{text}` of service `{service}`: expected `PORT`, `PUBLISH:PORT` like \"8080:80\" or `HOST_IP:PUBLISH:PORT` like \"0.0.0.0:8080:80\"{hint}"),
                );
                return None;
            };
            parsed
        }
    };
    if port.port == 0 || port.target == 0 || port.publish == Some(0) {
        zero(issues);
        return None;
    }
    Some(port)
}

/// A path as written, for comparing: without `./` segments and trailing `/`.
fn normal_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

/// Whether `inner` is `outer` or below it (both normalized).
fn path_within(inner: &str, outer: &str) -> bool {
    outer.is_empty()
        || inner == outer
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/') || outer.ends_with('/'))
}

/// The `layers:` sources of the images a pod's containers use (following `from` chains).
fn pod_layer_sources(images: &BTreeMap<String, Image>, pod: &Pod) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for c in pod.init_containers.iter().chain(&pod.containers) {
        let mut next = Some(c.image.clone());
        while let Some(name) = next.take() {
            if !seen.insert(name.clone()) {
                break;
            }
            let Some(image) = images.get(&name) else {
                break;
            };
            out.extend(image.layers.iter().map(|l| normal_path(&l.source)));
            if let ImageBase::From(base) = &image.base {
                next = Some(base.clone());
            }
        }
    }
    out
}

/// Watch rule `i` (from 0): paths and pods given, pods declared, settings that fit the
/// action.
fn watch_rule(
    m: &Manifest,
    images: &BTreeMap<String, Image>,
    pods: &BTreeMap<String, Pod>,
    spec: &WatchSpec,
    i: usize,
    issues: &mut Issues,
) -> Option<WatchRule> {
    let path = index("watch", i);
    let what = format!("watch rule {}", i + 1);
    let before = issues.count();
    if spec.paths.is_empty() {
        issues.report(
            &join(&path, "paths"),
            Anchor::Value,
            format!("{what} watches no path: list at least one file or directory in `paths`"),
        );
    }
    for (j, p) in spec.paths.iter().enumerate() {
        if p.is_empty() {
            issues.report(
                &index(&join(&path, "paths"), j),
                Anchor::Value,
                format!("an empty path in `paths` of {what}"),
            );
        }
    }
    for (j, g) in spec.ignore.iter().enumerate() {
        if g.trim().is_empty() {
            issues.report(
                &index(&join(&path, "ignore"), j),
                Anchor::Value,
                format!("an empty pattern in `ignore` of {what}"),
            );
        }
    }
    let ppath = join(&path, "pods");
    if spec.pods.is_empty() {
        issues.report(
            &ppath,
            Anchor::Value,
            format!("{what} applies to no pod: list at least one in `pods`"),
        );
    }
    let mut seen = BTreeSet::new();
    for (j, pod) in spec.pods.iter().enumerate() {
        if !m.pods.contains_key(pod) {
            issues.report(
                &index(&ppath, j),
                Anchor::Value,
                format!(
                    "{what} names pod `{pod}`, which is not a pod{}",
                    did_you_mean(pod, m.pods.keys())
                ),
            );
        } else if !seen.insert(pod) {
            issues.report(
                &index(&ppath, j),
                Anchor::Value,
                format!("{what} names pod `{pod}` twice"),
            );
        }
    }
    let action = match spec.action {
        WatchAction::Sync => "sync",
        WatchAction::Restart => "restart",
        WatchAction::Redeploy => "redeploy",
    };
    if spec.action != WatchAction::Sync && spec.target.is_some() {
        issues.report(
            &join(&path, "target"),
            Anchor::Key,
            format!("`target` applies to `sync` rules only; {what} is a `{action}` rule"),
        );
    }
    if spec.action != WatchAction::Sync && !spec.containers.is_empty() {
        issues.report(
            &join(&path, "containers"),
            Anchor::Key,
            format!("`containers` applies to `sync` rules only; {what} is a `{action}` rule"),
        );
    }
    let cpath = join(&path, "containers");
    for (j, name) in spec.containers.iter().enumerate() {
        for pod in spec
            .pods
            .iter()
            .filter_map(|p| m.pods.get(p).map(|s| (p, s)))
        {
            let (pod_name, pod_spec) = pod;
            let names: Vec<String> = pod_spec.containers.iter().map(|c| c.name.clone()).collect();
            if !names.contains(name) {
                issues.report(
                    &index(&cpath, j),
                    Anchor::Value,
                    format!(
                        "{what} names container `{name}`, which pod `{pod_name}` does not have{}",
                        did_you_mean(name, names.iter())
                    ),
                );
            }
        }
    }
    if spec.action != WatchAction::Restart && spec.cascade.is_some() {
        issues.report(
            &join(&path, "cascade"),
            Anchor::Key,
            format!("`cascade` applies to `restart` rules only; {what} is a `{action}` rule"),
        );
    }
    let effect = match spec.action {
        WatchAction::Sync => match &spec.target {
            None => {
                issues.report(
                    &path,
                    Anchor::Value,
                    format!("missing field `target` in {what}: a `sync` rule needs the path in the containers its files go to"),
                );
                None
            }
            Some(t) if !t.starts_with('/') || t.split('/').any(|c| c == "..") => {
                issues.report(
                    &join(&path, "target"),
                    Anchor::Value,
                    format!("invalid `target` `{t}` in {what}: use an absolute path without `..`"),
                );
                None
            }
            Some(t) => Some(WatchEffect::Sync {
                target: normal_path(t),
            }),
        },
        WatchAction::Restart => Some(WatchEffect::Restart {
            cascade: spec.cascade.unwrap_or(false),
        }),
        WatchAction::Redeploy => {
            let watched: Vec<String> = spec.paths.iter().map(|p| normal_path(p)).collect();
            for (j, name) in spec.pods.iter().enumerate() {
                let Some(pod) = pods.get(name) else { continue };
                let layers = pod_layer_sources(images, pod);
                let covered = layers.iter().any(|l| {
                    watched
                        .iter()
                        .any(|w| path_within(l, w) || path_within(w, l))
                });
                if !covered {
                    issues.report(
                        &index(&ppath, j),
                        Anchor::Value,
                        format!(
                            "{what} redeploys pod `{name}`, but watches none of its images' `layers:` directories: a redeploy rebuilds the layers it watches"
                        ),
                    );
                }
            }
            Some(WatchEffect::Redeploy)
        }
    };
    let effect = effect?;
    (issues.count() == before).then(|| WatchRule {
        paths: spec.paths.clone(),
        ignore: spec.ignore.clone(),
        pods: spec.pods.clone(),
        containers: spec.containers.clone(),
        effect,
    })
}
