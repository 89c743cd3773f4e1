//! Node tree -> [`Manifest`], collecting every shape problem (unknown keys with "did you
//! mean", wrong types, missing keys) instead of stopping at the first one; plus the path ->
//! location index that lets validation point semantic problems at the source.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::manifest::error::{ManifestError, Problem, SourceLocation};
use crate::manifest::node::{self, Key, Kind, Loc, Node, ScalarType};
use crate::manifest::{
    BackoffSpec, Balance, CapacitySpec, CommandSpec, Condition, ContainerSpec, CountOrPercent,
    DependencySpec, DependsOnSpec, EmptyDirSpec, EnvSpec, FaultSpec, FileSourceSpec, FileUseSpec,
    HealthcheckSpec, HttpProbeSpec, ImageSpec, LayerMount, LayerSpec, LongFileUseSpec,
    LongMountSpec, Manifest, MountSpec, MountType, NetworkMode, NetworkSpec, NodeSpec, PodSpec,
    PodVolumeSpec, PortMapping, PortSpec, ProbeSpec, PullPolicy, Quantity, RequestsSpec,
    ResourcesSpec, Restart, RuntimeKind, ServiceSpec, TcpProbeSpec, Text, TmpfsSpec, UpdateSpec,
    VolumeSpec, WatchAction, WatchSpec,
};

/// Which part of a `key: value` entry a problem points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    Key,
    Value,
}

#[derive(Debug, Clone)]
struct Issue {
    path: String,
    anchor: Anchor,
    message: String,
    /// Where it is, when the caller knows better than the path index (Compose files).
    at: Option<Loc>,
    /// Shape problems always show; semantic ones are dropped under a broken path (they would
    /// only repeat the shape problem).
    shape: bool,
}

/// Problems found so far plus where every path is in the source.
#[derive(Debug, Default)]
pub(crate) struct Issues {
    list: Vec<Issue>,
    broken: Vec<String>,
    keys: HashMap<String, Loc>,
    values: HashMap<String, Loc>,
    syntax: Option<node::SyntaxError>,
    /// Other files problems may be in (`Loc::file` N is `files[N - 1]`): name and text.
    files: Vec<(std::path::PathBuf, String)>,
}

/// Joins a map key onto a path.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Joins a list index onto a path.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn parent(path: &str) -> Option<&str> {
    path.rfind(['.', '[']).map(|at| &path[..at])
}

impl Issues {
    /// How many problems were recorded so far.
    pub(crate) fn count(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.syntax.is_none() && self.visible() == 0
    }

    fn visible(&self) -> usize {
        self.list.iter().filter(|i| self.shows(i)).count()
    }

    fn shows(&self, issue: &Issue) -> bool {
        issue.shape
            || !self.broken.iter().any(|b| {
                issue.path == *b
                    || issue.path.starts_with(&format!("{b}."))
                    || issue.path.starts_with(&format!("{b}["))
            })
    }

    /// A semantic problem found by validation.
    pub(crate) fn report(&mut self, path: &str, anchor: Anchor, message: String) {
        self.list.push(Issue {
            path: path.to_string(),
            anchor,
            message,
            at: None,
            shape: false,
        });
    }

    /// A problem at a known place (Compose files), shown whatever else is broken.
    pub(crate) fn at(&mut self, path: &str, loc: Loc, message: String) {
        self.list.push(Issue {
            path: path.to_string(),
            anchor: Anchor::Value,
            message,
            at: Some(loc),
            shape: true,
        });
    }

    /// Records that `path` (of a manifest built from another format) is at `key`/`value`,
    /// so validation problems point there; the first place recorded for a path stays.
    pub(crate) fn place(&mut self, path: &str, key: Loc, value: Loc) {
        self.keys.entry(path.to_string()).or_insert(key);
        self.values.entry(path.to_string()).or_insert(value);
    }

    /// Takes over the other files of `from` (for a second list, of warnings).
    pub(crate) fn copy_files(&mut self, from: &Issues) {
        self.files.clone_from(&from.files);
    }

    /// Registers another file problems may be in; its number for [`Loc::file`].
    pub(crate) fn add_file(&mut self, name: std::path::PathBuf, text: String) -> u32 {
        self.files.push((name, text));
        u32::try_from(self.files.len()).unwrap_or(u32::MAX)
    }

    /// A shape problem; later semantic problems under `path` are dropped.
    fn shape(&mut self, path: &str, anchor: Anchor, message: String) {
        self.broken.push(path.to_string());
        self.list.push(Issue {
            path: path.to_string(),
            anchor,
            message,
            at: None,
            shape: true,
        });
    }

    /// Whether any path with a shape problem satisfies `f` (to skip checks that would only
    /// repeat it, like a selector over labels that failed to parse).
    pub(crate) fn any_broken(&self, f: impl Fn(&str) -> bool) -> bool {
        self.broken.iter().any(|b| f(b))
    }

    /// Marks `path` broken without a message (a problem reported elsewhere covers it).
    fn mark_broken(&mut self, path: &str) {
        self.broken.push(path.to_string());
    }

    fn locate(&self, path: &str, anchor: Anchor) -> Option<Loc> {
        let mut current = Some(path);
        while let Some(p) = current {
            let (first, second) = match anchor {
                Anchor::Key => (&self.keys, &self.values),
                Anchor::Value => (&self.values, &self.keys),
            };
            if let Some(loc) = first.get(p).or_else(|| second.get(p)) {
                return Some(*loc);
            }
            current = parent(p);
        }
        None
    }

    pub(crate) fn into_error(self, source: &str, origin: &Path) -> ManifestError {
        let main: Vec<&str> = source.lines().collect();
        let others: Vec<Vec<&str>> = self
            .files
            .iter()
            .map(|(_, t)| t.lines().collect())
            .collect();
        let location = |loc: Option<Loc>| {
            let l = loc.filter(|l| l.line > 0)?;
            let lines = match l.file {
                0 => &main,
                n => others.get(n as usize - 1)?,
            };
            Some(SourceLocation {
                line: l.line,
                column: l.column.max(1),
                len: l.len.max(1),
                line_text: lines
                    .get(l.line as usize - 1)
                    .map_or(String::new(), |t| (*t).to_string()),
            })
        };
        let file = |loc: Option<Loc>| match loc {
            Some(l) if l.file > 0 => self.files.get(l.file as usize - 1).map(|(n, _)| n.clone()),
            _ => None,
        };
        let mut problems = Vec::new();
        if let Some(syntax) = &self.syntax {
            problems.push(Problem {
                path: String::new(),
                message: syntax.message.clone(),
                location: location(syntax.loc),
                file: None,
            });
        }
        for issue in self.list.iter().filter(|i| self.shows(i)) {
            let loc = issue.at.or_else(|| self.locate(&issue.path, issue.anchor));
            problems.push(Problem {
                path: issue.path.clone(),
                message: issue.message.clone(),
                location: location(loc),
                file: file(loc),
            });
        }
        ManifestError::new(origin.to_path_buf(), problems)
    }

    /// Records where every path is: keys and values of maps, items of lists (a list item that
    /// is a plain string is also reachable as `path.<string>`, for `depends_on: [db]`).
    fn index(&mut self, node: &Node, path: &str) {
        self.values.entry(path.to_string()).or_insert(node.loc);
        match &node.kind {
            Kind::Map(entries) => {
                for (key, value) in entries {
                    let p = join(path, &key.name);
                    self.keys.entry(p.clone()).or_insert(key.loc);
                    self.index(value, &p);
                }
            }
            Kind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.index(item, &index(path, i));
                    if let Kind::Scalar(s) = &item.kind {
                        self.values.entry(join(path, &s.text)).or_insert(item.loc);
                    }
                }
            }
            Kind::Scalar(_) | Kind::Null => {}
        }
    }

    fn wrong_type(&mut self, node: &Node, path: &str, what: &str, expected: &str) {
        self.shape(
            path,
            Anchor::Value,
            format!(
                "wrong type for {what}: expected {expected}, found {}",
                node.kind.describe()
            ),
        );
    }

    /// The entries of a mapping (null counts as empty), after reporting unknown keys.
    fn map<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        what: &str,
        allowed: &[&str],
        context: &str,
    ) -> Option<Entries<'n>> {
        match &node.kind {
            Kind::Map(entries) => {
                if !allowed.is_empty() {
                    for (key, _) in entries {
                        let extension = path.is_empty() && key.name.starts_with("x-");
                        if !extension && !allowed.contains(&key.name.as_str()) {
                            let message = unknown_field(&key.name, allowed, context);
                            self.list.push(Issue {
                                path: join(path, &key.name),
                                anchor: Anchor::Key,
                                message,
                                at: None,
                                shape: true,
                            });
                        }
                    }
                }
                Some(Entries(entries))
            }
            Kind::Null => Some(Entries(&[])),
            _ => {
                self.wrong_type(node, path, what, "a mapping");
                None
            }
        }
    }

    /// A mapping that takes no keys yet (`data:` or `data: {}`); every key is reported.
    fn no_options(&mut self, node: &Node, path: &str, what: &str) -> bool {
        match &node.kind {
            Kind::Null => true,
            Kind::Map(entries) => {
                for (key, _) in entries {
                    self.list.push(Issue {
                        path: join(path, &key.name),
                        anchor: Anchor::Key,
                        message: format!("{what} takes no options yet: remove `{}`", key.name),
                        at: None,
                        shape: true,
                    });
                }
                entries.is_empty()
            }
            _ => {
                self.wrong_type(node, path, what, "an empty mapping");
                false
            }
        }
    }

    fn list<'n>(&mut self, node: &'n Node, path: &str, what: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            Kind::Null => Some(&[]),
            _ => {
                self.wrong_type(node, path, what, "a list");
                None
            }
        }
    }

    fn text(&mut self, node: &Node, path: &str, what: &str) -> Option<String> {
        match &node.kind {
            Kind::Scalar(s) => Some(s.text.clone()),
            _ => {
                self.wrong_type(node, path, what, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, path: &str, what: &str) -> Option<bool> {
        match &node.kind {
            Kind::Scalar(s) if s.ty == ScalarType::Bool => {
                Some(s.text.eq_ignore_ascii_case("true"))
            }
            _ => {
                self.wrong_type(node, path, what, "`true` or `false`");
                None
            }
        }
    }

    fn integer<T: TryFrom<u64>>(
        &mut self,
        node: &Node,
        path: &str,
        what: &str,
        range: &str,
    ) -> Option<T> {
        match &node.kind {
            Kind::Scalar(s) if s.ty == ScalarType::Int => {
                let value = s.text.parse::<u64>().ok().and_then(|v| T::try_from(v).ok());
                if value.is_none() {
                    self.shape(
                        path,
                        Anchor::Value,
                        format!("{what} must be {range}, found `{}`", s.text),
                    );
                }
                value
            }
            _ => {
                self.wrong_type(node, path, what, &format!("an integer ({range})"));
                None
            }
        }
    }

    /// Reports a required key that is missing from the mapping at `path`.
    fn missing(&mut self, path: &str, key: &str, context: &str) {
        self.shape(
            path,
            Anchor::Value,
            format!("missing field `{key}` in {context}"),
        );
    }

    /// A map of string keys to texts (labels, selectors).
    fn string_map(&mut self, node: &Node, path: &str, what: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(entries) = self.map(node, path, what, &[], "") {
            for (key, value) in entries.0 {
                let p = join(path, &key.name);
                let what = format!("`{}` in {what}", key.name);
                if let Some(text) = self.text(value, &p, &what) {
                    out.insert(key.name.clone(), text);
                }
            }
        }
        out
    }
}

/// The entries of a YAML mapping.
#[derive(Debug, Clone, Copy)]
struct Entries<'n>(&'n [(Key, Node)]);

impl<'n> Entries<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.0.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }
}

/// Names people bring from Compose or Kubernetes, mapped to ours.
const ALIASES: [(&str, &str); 7] = [
    ("environment", "env"),
    ("cmd", "command"),
    ("workdir", "working_dir"),
    ("working-dir", "working_dir"),
    ("depends-on", "depends_on"),
    ("dependsOn", "depends_on"),
    ("workingDir", "working_dir"),
];

/// The closest allowed key to `word`, if any is close enough.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    if let Some((_, to)) = ALIASES.iter().find(|(from, _)| *from == word)
        && let Some(c) = candidates.iter().find(|c| *c == to)
    {
        return Some(c);
    }
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn unknown_field(key: &str, allowed: &[&str], context: &str) -> String {
    match suggest(key, allowed) {
        Some(s) => format!("unknown field `{key}` {context}; did you mean `{s}`?"),
        None => {
            let list = allowed
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ");
            format!("unknown field `{key}` {context}; expected one of {list}")
        }
    }
}

/// Parses `source` and converts it; `None` when there is no usable tree at all.
pub(crate) fn convert(source: &str, cx: &mut Issues) -> Option<Manifest> {
    let root = match node::parse_tree(source) {
        Ok(root) => root,
        Err(e) => {
            cx.syntax = Some(e);
            return None;
        }
    };
    cx.index(&root, "");
    if root.kind == Kind::Null {
        cx.shape(
            "",
            Anchor::Value,
            "the manifest is empty; declare at least one pod under `pods`".into(),
        );
        return None;
    }
    let entries = cx.map(&root, "", "the manifest", &TOP_KEYS, "at the top level")?;
    let mut m = Manifest::default();
    if let Some(n) = entries.get("name") {
        m.name = cx.text(n, "name", "`name`");
    }
    if let Some(images) = entries.get("images")
        && let Some(list) = cx.map(images, "images", "`images`", &[], "")
    {
        for (key, node) in list.0 {
            let path = join("images", &key.name);
            m.images
                .insert(key.name.clone(), image(cx, node, &path, &key.name));
        }
    }
    if let Some(pods) = entries.get("pods")
        && let Some(list) = cx.map(pods, "pods", "`pods`", &[], "")
    {
        for (key, node) in list.0 {
            let path = join("pods", &key.name);
            m.pods
                .insert(key.name.clone(), pod(cx, node, &path, &key.name));
        }
    }
    if let Some(volumes) = entries.get("volumes")
        && let Some(list) = cx.map(volumes, "volumes", "`volumes`", &[], "")
    {
        for (key, node) in list.0 {
            let path = join("volumes", &key.name);
            let what = format!("volume `{}`", key.name);
            let spec = cx.no_options(node, &path, &what).then_some(VolumeSpec {});
            m.volumes.insert(key.name.clone(), spec);
        }
    }
    for (key, map) in [("configs", &mut m.configs), ("secrets", &mut m.secrets)] {
        if let Some(node) = entries.get(key)
            && let Some(list) = cx.map(node, key, &format!("`{key}`"), &[], "")
        {
            for (name, node) in list.0 {
                let path = join(key, &name.name);
                let what = format!("{} `{}`", &key[..key.len() - 1], name.name);
                if let Some(spec) = file_source(cx, node, &path, &what) {
                    map.insert(name.name.clone(), spec);
                }
            }
        }
    }
    if let Some(node) = entries.get("network")
        && let Some(e) = cx.map(node, "network", "`network`", &NETWORK_KEYS, "in `network`")
    {
        let mut spec = NetworkSpec::default();
        if let Some(n) = e.get("subnet") {
            spec.subnet = cx.text(n, "network.subnet", "`subnet` of `network`");
        }
        m.network = Some(spec);
    }
    if let Some(nodes) = entries.get("nodes")
        && let Some(list) = cx.map(nodes, "nodes", "`nodes`", &[], "")
    {
        for (key, node) in list.0 {
            let path = join("nodes", &key.name);
            if let Some(spec) = node_spec(cx, node, &path, &key.name) {
                m.nodes.insert(key.name.clone(), spec);
            }
        }
    }
    if let Some(faults) = entries.get("faults")
        && let Some(list) = cx.map(faults, "faults", "`faults`", &[], "")
    {
        for (key, node) in list.0 {
            let path = join("faults", &key.name);
            if let Some(spec) = fault_spec(cx, node, &path, &key.name) {
                m.faults.insert(key.name.clone(), spec);
            }
        }
    }
    if let Some(node) = entries.get("capacity")
        && let Some(e) = cx.map(
            node,
            "capacity",
            "`capacity`",
            &CAPACITY_KEYS,
            "in `capacity`",
        )
    {
        let (cpu, memory) = cpu_memory(cx, e, "capacity", "`capacity`");
        m.capacity = Some(CapacitySpec { cpu, memory });
    }
    if let Some(services) = entries.get("services")
        && let Some(list) = cx.map(services, "services", "`services`", &[], "")
    {
        for (key, node) in list.0 {
            let path = join("services", &key.name);
            m.services
                .insert(key.name.clone(), service(cx, node, &path, &key.name));
        }
    }
    if let Some(node) = entries.get("watch")
        && let Some(items) = cx.list(node, "watch", "`watch`")
    {
        for (i, item) in items.iter().enumerate() {
            let path = index("watch", i);
            // a rule that did not convert keeps its place (so later rules keep their
            // numbers), its path marked broken
            let rule = watch_rule(cx, item, &path, i + 1).unwrap_or_else(|| {
                cx.mark_broken(&path);
                WatchSpec {
                    paths: Vec::new(),
                    action: WatchAction::Restart,
                    pods: Vec::new(),
                    ignore: Vec::new(),
                    target: None,
                    cascade: None,
                    containers: Vec::new(),
                }
            });
            m.watch.push(rule);
        }
    }
    Some(m)
}

/// A list of strings (`paths`, `pods`, `ignore` of a watch rule).
fn strings(cx: &mut Issues, node: &Node, path: &str, what: &str) -> Option<Vec<String>> {
    let items = cx.list(node, path, what)?;
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match cx.text(item, &index(path, i), &format!("an item of {what}")) {
            Some(t) => out.push(t),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Watch rule number `n` (from 1).
fn watch_rule(cx: &mut Issues, node: &Node, path: &str, n: usize) -> Option<WatchSpec> {
    let what = format!("watch rule {n}");
    let e = cx.map(node, path, &what, &WATCH_KEYS, &format!("in {what}"))?;
    let mut complete = true;
    let mut list = |cx: &mut Issues, key: &str, required: bool| -> Vec<String> {
        match e.get(key) {
            Some(v) => strings(cx, v, &join(path, key), &format!("`{key}` of {what}"))
                .unwrap_or_else(|| {
                    complete = false;
                    Vec::new()
                }),
            None => {
                if required {
                    cx.missing(path, key, &what);
                    complete = false;
                }
                Vec::new()
            }
        }
    };
    let paths = list(cx, "paths", true);
    let pods = list(cx, "pods", true);
    let ignore = list(cx, "ignore", false);
    let containers = list(cx, "containers", false);
    let action = match e.get("action") {
        None => {
            cx.missing(path, "action", &what);
            None
        }
        Some(v) => {
            let apath = join(path, "action");
            cx.text(v, &apath, &format!("`action` of {what}"))
                .and_then(|text| match WatchAction::parse(&text) {
                    Some(a) => Some(a),
                    None => {
                        let hint = suggest(&text, &WATCH_ACTIONS)
                            .map_or_else(String::new, |s| format!("; did you mean `{s}`?"));
                        cx.shape(
                            &apath,
                            Anchor::Value,
                            format!(
                                "unknown action `{text}` in {what}: use `sync`, `restart` or `redeploy`{hint}"
                            ),
                        );
                        None
                    }
                })
        }
    };
    let target = e
        .get("target")
        .and_then(|v| cx.text(v, &join(path, "target"), &format!("`target` of {what}")));
    let cascade = e
        .get("cascade")
        .and_then(|v| cx.boolean(v, &join(path, "cascade"), &format!("`cascade` of {what}")));
    let action = action?;
    complete.then_some(WatchSpec {
        paths,
        action,
        pods,
        ignore,
        target,
        cascade,
        containers,
    })
}

fn image(cx: &mut Issues, node: &Node, path: &str, name: &str) -> ImageSpec {
    let mut spec = ImageSpec::default();
    let context = format!("in image `{name}`");
    let what = format!("image `{name}`");
    let Some(e) = cx.map(node, path, &what, &IMAGE_KEYS, &context) else {
        return spec;
    };
    if let Some(n) = e.get("from") {
        spec.from = cx.text(n, &join(path, "from"), &format!("`from` of {what}"));
    }
    if let Some(n) = e.get("rootfs") {
        spec.rootfs = cx.text(n, &join(path, "rootfs"), &format!("`rootfs` of {what}"));
    }
    if let Some(n) = e.get("archive") {
        spec.archive = cx.text(n, &join(path, "archive"), &format!("`archive` of {what}"));
    }
    if let Some(n) = e.get("ref") {
        spec.reference = cx.text(n, &join(path, "ref"), &format!("`ref` of {what}"));
    }
    if let Some(n) = e.get("allow_setuid") {
        spec.allow_setuid = cx.boolean(
            n,
            &join(path, "allow_setuid"),
            &format!("`allow_setuid` of {what}"),
        );
    }
    if let Some(n) = e.get("pull") {
        let ppath = join(path, "pull");
        if let Some(text) = cx.text(n, &ppath, &format!("`pull` of {what}")) {
            spec.pull = match text.as_str() {
                "missing" | "if-not-present" | "if_not_present" => Some(PullPolicy::Missing),
                "always" => Some(PullPolicy::Always),
                "never" => Some(PullPolicy::Never),
                other => {
                    cx.shape(
                        &ppath,
                        Anchor::Value,
                        format!(
                            "unknown pull policy `{other}` in image `{name}`; use `missing`, \
                             `always` or `never`"
                        ),
                    );
                    None
                }
            };
        }
    }
    if let Some(n) = e.get("layers") {
        let lpath = join(path, "layers");
        if let Some(items) = cx.list(n, &lpath, &format!("`layers` of {what}")) {
            for (i, item) in items.iter().enumerate() {
                let ipath = index(&lpath, i);
                spec.layers.push(layer(cx, item, &ipath, name));
            }
        }
    }
    spec
}

fn layer(cx: &mut Issues, node: &Node, path: &str, image: &str) -> LayerSpec {
    let placeholder = LayerSpec::Path(String::new());
    match &node.kind {
        Kind::Scalar(s) => LayerSpec::Path(s.text.clone()),
        Kind::Map(_) => {
            let context = format!("in a layer of image `{image}`");
            let Some(e) = cx.map(node, path, "a layer", &LAYER_KEYS, &context) else {
                return placeholder;
            };
            let target = e
                .get("target")
                .and_then(|n| cx.text(n, &join(path, "target"), "`target` of a layer"));
            match e.get("source") {
                Some(n) => match cx.text(n, &join(path, "source"), "`source` of a layer") {
                    Some(source) => LayerSpec::Mount(LayerMount { source, target }),
                    None => {
                        cx.mark_broken(path);
                        placeholder
                    }
                },
                None => {
                    cx.missing(path, "source", &format!("a layer of image `{image}`"));
                    placeholder
                }
            }
        }
        _ => {
            cx.wrong_type(
                node,
                path,
                &format!("a layer of image `{image}`"),
                "a directory path or a mapping with `source` and `target`",
            );
            placeholder
        }
    }
}

const TOP_KEYS: [&str; 12] = [
    "name", "images", "pods", "services", "volumes", "configs", "secrets", "network", "watch",
    "nodes", "capacity", "faults",
];
const FAULT_KEYS: [&str; 7] = [
    "target",
    "peer",
    "latency",
    "jitter",
    "loss",
    "bandwidth",
    "partition",
];
const NODE_KEYS: [&str; 3] = ["cpu", "memory", "labels"];
const CAPACITY_KEYS: [&str; 2] = ["cpu", "memory"];
const REQUEST_KEYS: [&str; 2] = ["cpu", "memory"];
const WATCH_KEYS: [&str; 7] = [
    "paths",
    "action",
    "pods",
    "ignore",
    "target",
    "cascade",
    "containers",
];
const WATCH_ACTIONS: [&str; 3] = ["sync", "restart", "redeploy"];
const NETWORK_KEYS: [&str; 1] = ["subnet"];
const FILE_SOURCE_KEYS: [&str; 3] = ["file", "environment", "content"];
const FILE_USE_KEYS: [&str; 5] = ["source", "target", "uid", "gid", "mode"];
const IMAGE_KEYS: [&str; 7] = [
    "from",
    "rootfs",
    "archive",
    "ref",
    "pull",
    "allow_setuid",
    "layers",
];
const LAYER_KEYS: [&str; 2] = ["source", "target"];
const DEPENDENCY_KEYS: [&str; 1] = ["condition"];
const RESOURCE_KEYS: [&str; 4] = ["cpu", "memory", "pids", "requests"];
const SERVICE_KEYS: [&str; 3] = ["selector", "ports", "balance"];
const PORT_KEYS: [&str; 4] = ["port", "target", "publish", "host_ip"];
const BALANCES: [&str; 2] = ["round_robin", "least_conn"];
const POD_KEYS: [&str; 12] = [
    "replicas",
    "labels",
    "depends_on",
    "restart",
    "backoff",
    "runtime",
    "volumes",
    "init_containers",
    "containers",
    "network_mode",
    "update",
    "node_selector",
];
const UPDATE_KEYS: [&str; 4] = [
    "max_surge",
    "max_unavailable",
    "min_ready",
    "progress_deadline",
];
const NETWORK_MODES: [&str; 2] = ["project", "none"];
const POD_VOLUME_KEYS: [&str; 1] = ["empty_dir"];
const BACKOFF_KEYS: [&str; 2] = ["initial", "max"];
const MOUNT_KEYS: [&str; 5] = ["type", "source", "target", "read_only", "tmpfs"];
const TMPFS_KEYS: [&str; 1] = ["size"];

/// A pod's `update:` (the values are checked in `validate`).
fn update(cx: &mut Issues, node: &Node, path: &str, pod: &str) -> Option<UpdateSpec> {
    let what = format!("`update` of {pod}");
    let e = cx.map(node, path, &what, &UPDATE_KEYS, &format!("in {what}"))?;
    let mut spec = UpdateSpec::default();
    for (key, slot) in [
        ("max_surge", &mut spec.max_surge),
        ("max_unavailable", &mut spec.max_unavailable),
    ] {
        if let Some(v) = e.get(key) {
            let vpath = join(path, key);
            *slot = match &v.kind {
                Kind::Scalar(s) if s.ty == ScalarType::Int => cx
                    .integer(v, &vpath, &format!("`{key}` of {what}"), "0 or more")
                    .map(CountOrPercent::Count),
                _ => cx
                    .text(v, &vpath, &format!("`{key}` of {what}"))
                    .map(CountOrPercent::Percent),
            };
        }
    }
    for (key, slot) in [
        ("min_ready", &mut spec.min_ready),
        ("progress_deadline", &mut spec.progress_deadline),
    ] {
        if let Some(v) = e.get(key) {
            *slot = cx.text(v, &join(path, key), &format!("`{key}` of {what}"));
        }
    }
    Some(spec)
}

fn pod(cx: &mut Issues, node: &Node, path: &str, name: &str) -> PodSpec {
    let mut spec = PodSpec::default();
    let context = format!("in pod `{name}`");
    let what = format!("pod `{name}`");
    let Some(e) = cx.map(node, path, &what, &POD_KEYS, &context) else {
        return spec;
    };
    if let Some(n) = e.get("replicas") {
        spec.replicas = cx.integer(
            n,
            &join(path, "replicas"),
            &format!("`replicas` of {what}"),
            "0 or more",
        );
    }
    if let Some(n) = e.get("labels") {
        spec.labels = cx.string_map(n, &join(path, "labels"), &format!("`labels` of {what}"));
    }
    if let Some(n) = e.get("depends_on") {
        spec.depends_on = depends_on(cx, n, &join(path, "depends_on"), name);
    }
    if let Some(n) = e.get("restart") {
        let rpath = join(path, "restart");
        if let Some(text) = cx.text(n, &rpath, &format!("`restart` of {what}")) {
            spec.restart = restart(cx, &text, &rpath, name);
        }
    }
    if let Some(n) = e.get("backoff") {
        let bpath = join(path, "backoff");
        let bwhat = format!("`backoff` of {what}");
        if let Some(b) = cx.map(n, &bpath, &bwhat, &BACKOFF_KEYS, &format!("in {bwhat}")) {
            let mut spec_b = BackoffSpec::default();
            for (key, slot) in [("initial", &mut spec_b.initial), ("max", &mut spec_b.max)] {
                if let Some(v) = b.get(key) {
                    *slot = cx.text(v, &join(&bpath, key), &format!("`{key}` of {bwhat}"));
                }
            }
            spec.backoff = Some(spec_b);
        }
    }
    if let Some(n) = e.get("update") {
        spec.update = update(cx, n, &join(path, "update"), &what);
    }
    if let Some(n) = e.get("node_selector") {
        spec.node_selector = cx.string_map(
            n,
            &join(path, "node_selector"),
            &format!("`node_selector` of {what}"),
        );
    }
    if let Some(n) = e.get("runtime") {
        let rpath = join(path, "runtime");
        if let Some(text) = cx.text(n, &rpath, &format!("`runtime` of {what}")) {
            spec.runtime = RuntimeKind::parse(&text);
            if spec.runtime.is_none() {
                let hint = suggest(&text, &RUNTIMES)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                cx.shape(
                    &rpath,
                    Anchor::Value,
                    format!("unknown runtime `{text}` in pod `{name}`: expected `builtin`, `crun` or `runc`{hint}"),
                );
            }
        }
    }
    if let Some(n) = e.get("network_mode") {
        let npath = join(path, "network_mode");
        if let Some(text) = cx.text(n, &npath, &format!("`network_mode` of {what}")) {
            spec.network_mode = NetworkMode::parse(&text);
            if spec.network_mode.is_none() {
                let hint = suggest(&text, &NETWORK_MODES)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                cx.shape(
                    &npath,
                    Anchor::Value,
                    format!("unknown network_mode `{text}` in pod `{name}`: expected `project` or `none`{hint}"),
                );
            }
        }
    }
    if let Some(n) = e.get("volumes") {
        let vpath = join(path, "volumes");
        if let Some(list) = cx.map(n, &vpath, &format!("`volumes` of {what}"), &[], "") {
            for (key, node) in list.0 {
                let kpath = join(&vpath, &key.name);
                let kwhat = format!("volume `{}` of {what}", key.name);
                let Some(v) = cx.map(
                    node,
                    &kpath,
                    &kwhat,
                    &POD_VOLUME_KEYS,
                    &format!("in {kwhat}"),
                ) else {
                    continue;
                };
                match v.get("empty_dir") {
                    Some(d) => {
                        let dpath = join(&kpath, "empty_dir");
                        let dwhat = format!("`empty_dir` of {kwhat}");
                        if cx.no_options(d, &dpath, &dwhat) {
                            spec.volumes.insert(
                                key.name.clone(),
                                PodVolumeSpec {
                                    empty_dir: EmptyDirSpec {},
                                },
                            );
                        }
                    }
                    None => cx.missing(&kpath, "empty_dir", &kwhat),
                }
            }
        }
    }
    if let Some(n) = e.get("init_containers") {
        let cpath = join(path, "init_containers");
        if let Some(items) = cx.list(n, &cpath, &format!("`init_containers` of {what}")) {
            for (i, item) in items.iter().enumerate() {
                spec.init_containers
                    .push(container(cx, item, &index(&cpath, i), name, i));
            }
        }
    }
    match e.get("containers") {
        Some(n) => {
            let cpath = join(path, "containers");
            if let Some(items) = cx.list(n, &cpath, &format!("`containers` of {what}")) {
                for (i, item) in items.iter().enumerate() {
                    spec.containers
                        .push(container(cx, item, &index(&cpath, i), name, i));
                }
            }
        }
        None => cx.missing(path, "containers", &what),
    }
    spec
}

fn restart(cx: &mut Issues, text: &str, path: &str, pod: &str) -> Option<Restart> {
    match text {
        "always" => Some(Restart::Always),
        "on-failure" => Some(Restart::OnFailure),
        "never" => Some(Restart::Never),
        other => {
            let hint = match other {
                "no" | "false" => "; use `never` (Compose's `no`)".to_string(),
                "unless-stopped" => "; use `always`".to_string(),
                "Always" | "OnFailure" | "Never" | "on_failure" | "onfailure" => {
                    format!(
                        "; did you mean `{}`?",
                        suggest(&other.to_lowercase().replace('_', "-"), &RESTARTS)
                            .unwrap_or("on-failure")
                    )
                }
                _ => suggest(other, &RESTARTS)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default(),
            };
            cx.shape(
                path,
                Anchor::Value,
                format!(
                    "invalid restart policy `{other}` in pod `{pod}`: expected `always`, `on-failure` or `never`{hint}"
                ),
            );
            None
        }
    }
}

const RESTARTS: [&str; 3] = ["always", "on-failure", "never"];
const RUNTIMES: [&str; 3] = ["builtin", "crun", "runc"];

fn depends_on(cx: &mut Issues, node: &Node, path: &str, pod: &str) -> Option<DependsOnSpec> {
    let what = format!("`depends_on` of pod `{pod}`");
    match &node.kind {
        Kind::Seq(items) => {
            let mut names = Vec::new();
            for (i, item) in items.iter().enumerate() {
                if let Some(t) = cx.text(item, &index(path, i), &format!("an item of {what}")) {
                    names.push(t);
                }
            }
            Some(DependsOnSpec::List(names))
        }
        Kind::Map(entries) => {
            let mut map = BTreeMap::new();
            for (key, value) in entries {
                let dpath = join(path, &key.name);
                let context = format!("in dependency `{}` of pod `{pod}`", key.name);
                let mut dep = DependencySpec::default();
                if let Some(e) = cx.map(value, &dpath, "a dependency", &DEPENDENCY_KEYS, &context)
                    && let Some(n) = e.get("condition")
                {
                    let cpath = join(&dpath, "condition");
                    if let Some(text) = cx.text(n, &cpath, "`condition`") {
                        dep.condition = condition(cx, &text, &cpath, pod, &key.name);
                    }
                }
                map.insert(key.name.clone(), dep);
            }
            Some(DependsOnSpec::Map(map))
        }
        Kind::Null => None,
        Kind::Scalar(_) => {
            cx.wrong_type(node, path, &what, "a list of pod names or a mapping");
            None
        }
    }
}

fn condition(
    cx: &mut Issues,
    text: &str,
    path: &str,
    pod: &str,
    dependency: &str,
) -> Option<Condition> {
    match text {
        "started" => Some(Condition::Started),
        "completed" => Some(Condition::Completed),
        "healthy" | "service_healthy" => Some(Condition::Healthy),
        "service_started" => Some(Condition::Started),
        "service_completed_successfully" => Some(Condition::Completed),
        other => {
            let hint = suggest(other, &["started", "completed", "healthy"])
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            cx.shape(
                path,
                Anchor::Value,
                format!(
                    "invalid condition `{other}` for dependency `{dependency}` of pod `{pod}`: expected `started` or `completed`{hint}"
                ),
            );
            None
        }
    }
}

const PROBE_KEYS: [&str; 8] = [
    "exec",
    "http",
    "tcp",
    "period",
    "timeout",
    "initial_delay",
    "failure_threshold",
    "success_threshold",
];
const HTTP_PROBE_KEYS: [&str; 2] = ["port", "path"];
const TCP_PROBE_KEYS: [&str; 1] = ["port"];
const HEALTHCHECK_KEYS: [&str; 6] = [
    "test",
    "interval",
    "timeout",
    "retries",
    "start_period",
    "disable",
];
const CONTAINER_KEYS: [&str; 22] = [
    "name",
    "image",
    "entrypoint",
    "command",
    "user",
    "env",
    "working_dir",
    "resources",
    "privileged",
    "read_only",
    "tty",
    "stop_signal",
    "stop_grace_period",
    "cap_add",
    "cap_drop",
    "volumes",
    "configs",
    "secrets",
    "readiness",
    "liveness",
    "startup",
    "healthcheck",
];

/// A command-like value: a string (shell words) or a list of arguments.
fn command(cx: &mut Issues, n: &Node, cpath: &str, key: &str, what: &str) -> Option<CommandSpec> {
    match &n.kind {
        Kind::Scalar(s) => Some(CommandSpec::Shell(s.text.clone())),
        Kind::Seq(items) => {
            let mut argv = Vec::new();
            for (j, item) in items.iter().enumerate() {
                let ipath = index(cpath, j);
                if let Some(t) = cx.text(item, &ipath, &format!("an argument of {what}")) {
                    argv.push(Text(t));
                }
            }
            Some(CommandSpec::Argv(argv))
        }
        _ => {
            cx.wrong_type(
                n,
                cpath,
                &format!("`{key}` of {what}"),
                "a list of arguments or a string",
            );
            None
        }
    }
}

fn container(cx: &mut Issues, node: &Node, path: &str, pod: &str, i: usize) -> ContainerSpec {
    let mut spec = ContainerSpec::default();
    // Name first, so later messages can say `pod.container`.
    let label = match &node.kind {
        Kind::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.name == "name")
            .and_then(|(_, v)| match &v.kind {
                Kind::Scalar(s) => Some(format!("{pod}.{}", s.text)),
                _ => None,
            })
            .unwrap_or_else(|| format!("{pod}[{i}]")),
        _ => format!("{pod}[{i}]"),
    };
    let what = format!("container `{label}`");
    let context = format!("in {what}");
    if node.kind == Kind::Null {
        cx.wrong_type(node, path, &what, "a mapping");
        return spec;
    }
    let Some(e) = cx.map(node, path, &what, &CONTAINER_KEYS, &context) else {
        return spec;
    };
    match e.get("name") {
        Some(n) => {
            if let Some(t) = cx.text(n, &join(path, "name"), &format!("`name` of {what}")) {
                spec.name = t;
            }
        }
        None => cx.missing(path, "name", &what),
    }
    if let Some(n) = e.get("image") {
        spec.image = cx.text(n, &join(path, "image"), &format!("`image` of {what}"));
    }
    if let Some(n) = e.get("entrypoint") {
        spec.entrypoint = command(cx, n, &join(path, "entrypoint"), "entrypoint", &what);
    }
    if let Some(n) = e.get("command") {
        spec.command = command(cx, n, &join(path, "command"), "command", &what);
    }
    if let Some(n) = e.get("user") {
        spec.user = cx.text(n, &join(path, "user"), &format!("`user` of {what}"));
    }
    if let Some(n) = e.get("env") {
        spec.env = env(cx, n, &join(path, "env"), &what);
    }
    if let Some(n) = e.get("working_dir") {
        spec.working_dir = cx.text(
            n,
            &join(path, "working_dir"),
            &format!("`working_dir` of {what}"),
        );
    }
    if let Some(n) = e.get("resources") {
        spec.resources = Some(resources(cx, n, &join(path, "resources"), &what));
    }
    if let Some(n) = e.get("read_only") {
        spec.read_only = cx.boolean(
            n,
            &join(path, "read_only"),
            &format!("`read_only` of {what}"),
        );
    }
    for (key, slot) in [
        ("readiness", &mut spec.readiness),
        ("liveness", &mut spec.liveness),
        ("startup", &mut spec.startup),
    ] {
        if let Some(n) = e.get(key) {
            *slot = Some(probe(
                cx,
                n,
                &join(path, key),
                &format!("`{key}` probe of {what}"),
            ));
        }
    }
    if let Some(n) = e.get("healthcheck") {
        spec.healthcheck = Some(healthcheck(cx, n, &join(path, "healthcheck"), &what));
    }
    if let Some(n) = e.get("tty") {
        spec.tty = cx.boolean(n, &join(path, "tty"), &format!("`tty` of {what}"));
    }
    if let Some(n) = e.get("stop_signal") {
        spec.stop_signal = cx.text(
            n,
            &join(path, "stop_signal"),
            &format!("`stop_signal` of {what}"),
        );
    }
    if let Some(n) = e.get("stop_grace_period") {
        spec.stop_grace_period = cx.text(
            n,
            &join(path, "stop_grace_period"),
            &format!("`stop_grace_period` of {what}"),
        );
    }
    if let Some(n) = e.get("privileged") {
        spec.privileged = cx.boolean(
            n,
            &join(path, "privileged"),
            &format!("`privileged` of {what}"),
        );
    }
    if let Some(n) = e.get("volumes") {
        let vpath = join(path, "volumes");
        if let Some(items) = cx.list(n, &vpath, &format!("`volumes` of {what}")) {
            let mut mounts = Vec::new();
            for (j, item) in items.iter().enumerate() {
                if let Some(m) = mount(cx, item, &index(&vpath, j), &what) {
                    mounts.push(m);
                }
            }
            spec.volumes = Some(mounts);
        }
    }
    for (key, slot) in [
        ("configs", &mut spec.configs),
        ("secrets", &mut spec.secrets),
    ] {
        if let Some(n) = e.get(key) {
            let kpath = join(path, key);
            if let Some(items) = cx.list(n, &kpath, &format!("`{key}` of {what}")) {
                let mut uses = Vec::new();
                for (j, item) in items.iter().enumerate() {
                    if let Some(u) =
                        file_use(cx, item, &index(&kpath, j), &format!("`{key}` of {what}"))
                    {
                        uses.push(u);
                    }
                }
                *slot = Some(uses);
            }
        }
    }
    for (key, slot) in [
        ("cap_add", &mut spec.cap_add),
        ("cap_drop", &mut spec.cap_drop),
    ] {
        if let Some(n) = e.get(key) {
            let kpath = join(path, key);
            let kwhat = format!("`{key}` of {what}");
            if let Some(items) = cx.list(n, &kpath, &kwhat) {
                let mut names = Vec::new();
                for (j, item) in items.iter().enumerate() {
                    let iwhat = format!("a capability in {kwhat}");
                    if let Some(t) = cx.text(item, &index(&kpath, j), &iwhat) {
                        names.push(t);
                    }
                }
                *slot = Some(names);
            }
        }
    }
    spec
}

/// A config or secret: `{ file | environment | content }`.
fn file_source(cx: &mut Issues, node: &Node, path: &str, what: &str) -> Option<FileSourceSpec> {
    let e = cx.map(node, path, what, &FILE_SOURCE_KEYS, &format!("in {what}"))?;
    let mut spec = FileSourceSpec::default();
    for (key, slot) in [
        ("file", &mut spec.file),
        ("environment", &mut spec.environment),
        ("content", &mut spec.content),
    ] {
        if let Some(n) = e.get(key) {
            *slot = cx.text(n, &join(path, key), &format!("`{key}` of {what}"));
        }
    }
    Some(spec)
}

/// A config or secret in a container: its name, or `{ source, target, uid, gid, mode }`.
fn file_use(cx: &mut Issues, node: &Node, path: &str, what: &str) -> Option<FileUseSpec> {
    if let Kind::Scalar(s) = &node.kind {
        return Some(FileUseSpec::Short(s.text.clone()));
    }
    let iwhat = format!("an entry of {what}");
    let e = cx.map(node, path, &iwhat, &FILE_USE_KEYS, &format!("in {iwhat}"))?;
    let mut spec = LongFileUseSpec::default();
    match e.get("source") {
        Some(n) => {
            spec.source = cx.text(n, &join(path, "source"), &format!("`source` of {iwhat}"))?
        }
        None => {
            cx.missing(path, "source", &iwhat);
            return None;
        }
    }
    if let Some(n) = e.get("target") {
        spec.target = cx.text(n, &join(path, "target"), &format!("`target` of {iwhat}"));
    }
    for (key, slot) in [("uid", &mut spec.uid), ("gid", &mut spec.gid)] {
        if let Some(n) = e.get(key) {
            *slot = cx.integer(
                n,
                &join(path, key),
                &format!("`{key}` of {iwhat}"),
                "0 or more",
            );
        }
    }
    if let Some(n) = e.get("mode") {
        let mpath = join(path, "mode");
        if let Some(text) = cx.text(n, &mpath, &format!("`mode` of {iwhat}")) {
            // `0440` is octal, as Compose files (YAML 1.1) mean it; so is `0o440`
            let octal = text
                .strip_prefix("0o")
                .or_else(|| text.strip_prefix('0').filter(|r| !r.is_empty()));
            let parsed = match octal {
                Some(digits) => u32::from_str_radix(digits, 8).ok(),
                None => text.parse::<u32>().ok(),
            };
            match parsed.filter(|m| *m <= 0o7777) {
                Some(m) => spec.mode = Some(m),
                None => cx.shape(
                    &mpath,
                    Anchor::Value,
                    format!(
                        "`mode` of {iwhat} must be permission bits like `0440`, found `{text}`"
                    ),
                ),
            }
        }
    }
    Some(FileUseSpec::Long(spec))
}

/// One entry of a container's `volumes`: the short string or the long map.
fn mount(cx: &mut Issues, node: &Node, path: &str, what: &str) -> Option<MountSpec> {
    let mwhat = format!("a mount of {what}");
    if let Kind::Scalar(s) = &node.kind {
        return Some(MountSpec::Short(s.text.clone()));
    }
    let e = cx.map(node, path, &mwhat, &MOUNT_KEYS, &format!("in {mwhat}"))?;
    let kind = match e.get("type") {
        Some(n) => {
            let tpath = join(path, "type");
            let text = cx.text(n, &tpath, &format!("`type` of {mwhat}"))?;
            let kinds = ["bind", "volume", "tmpfs", "empty_dir"];
            match text.as_str() {
                "bind" => MountType::Bind,
                "volume" => MountType::Volume,
                "tmpfs" => MountType::Tmpfs,
                "empty_dir" => MountType::EmptyDir,
                other => {
                    let hint = suggest(other, &kinds)
                        .map(|k| format!("; did you mean `{k}`?"))
                        .unwrap_or_default();
                    cx.shape(
                        &tpath,
                        Anchor::Value,
                        format!(
                            "invalid mount type `{other}` in {what}: expected `bind`, `volume`, `tmpfs` or `empty_dir`{hint}"
                        ),
                    );
                    return None;
                }
            }
        }
        None => {
            cx.missing(path, "type", &mwhat);
            return None;
        }
    };
    let target = match e.get("target") {
        Some(n) => cx.text(n, &join(path, "target"), &format!("`target` of {mwhat}"))?,
        None => {
            cx.missing(path, "target", &mwhat);
            return None;
        }
    };
    let source = match e.get("source") {
        Some(n) => Some(cx.text(n, &join(path, "source"), &format!("`source` of {mwhat}"))?),
        None => None,
    };
    let read_only = match e.get("read_only") {
        Some(n) => Some(cx.boolean(
            n,
            &join(path, "read_only"),
            &format!("`read_only` of {mwhat}"),
        )?),
        None => None,
    };
    let tmpfs = match e.get("tmpfs") {
        Some(n) => {
            let tpath = join(path, "tmpfs");
            let twhat = format!("`tmpfs` of {mwhat}");
            let t = cx.map(n, &tpath, &twhat, &TMPFS_KEYS, &format!("in {twhat}"))?;
            let size = match t.get("size") {
                Some(n) => Some(Quantity(cx.text(
                    n,
                    &join(&tpath, "size"),
                    &format!("`size` of {twhat}"),
                )?)),
                None => None,
            };
            Some(TmpfsSpec { size })
        }
        None => None,
    };
    Some(MountSpec::Long(LongMountSpec {
        kind,
        source,
        target,
        read_only,
        tmpfs,
    }))
}

fn env(cx: &mut Issues, node: &Node, path: &str, what: &str) -> Option<EnvSpec> {
    match &node.kind {
        Kind::Map(entries) => {
            let mut map = BTreeMap::new();
            for (key, value) in entries {
                let vpath = join(path, &key.name);
                match &value.kind {
                    Kind::Scalar(s) => {
                        map.insert(key.name.clone(), Text(s.text.clone()));
                    }
                    Kind::Null => cx.shape(
                        &vpath,
                        Anchor::Key,
                        format!(
                            "environment variable `{}` of {what} has no value; write `{}: \"\"` for an empty value",
                            key.name, key.name
                        ),
                    ),
                    _ => cx.wrong_type(
                        value,
                        &vpath,
                        &format!("environment variable `{}` of {what}", key.name),
                        "a string",
                    ),
                }
            }
            Some(EnvSpec::Map(map))
        }
        Kind::Seq(items) => {
            let mut list = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let ipath = index(path, i);
                if let Some(t) = cx.text(item, &ipath, &format!("an item of `env` of {what}")) {
                    list.push(t);
                } else {
                    cx.mark_broken(path);
                }
            }
            Some(EnvSpec::List(list))
        }
        Kind::Null => None,
        Kind::Scalar(_) => {
            cx.wrong_type(
                node,
                path,
                &format!("`env` of {what}"),
                "a mapping or a list of `KEY=VALUE`",
            );
            None
        }
    }
}

fn probe(cx: &mut Issues, node: &Node, path: &str, what: &str) -> ProbeSpec {
    let mut spec = ProbeSpec::default();
    let Some(e) = cx.map(node, path, what, &PROBE_KEYS, &format!("in {what}")) else {
        return spec;
    };
    if let Some(n) = e.get("exec") {
        spec.exec = command(cx, n, &join(path, "exec"), "exec", what);
    }
    if let Some(n) = e.get("http") {
        let hpath = join(path, "http");
        let hwhat = format!("`http` of {what}");
        if let Some(h) = cx.map(n, &hpath, &hwhat, &HTTP_PROBE_KEYS, &format!("in {hwhat}")) {
            let port = probe_port(cx, h.get("port"), &hpath, &hwhat);
            let path_text = h
                .get("path")
                .and_then(|p| cx.text(p, &join(&hpath, "path"), &format!("`path` of {hwhat}")));
            spec.http = port.map(|port| HttpProbeSpec {
                port,
                path: path_text,
            });
        }
    }
    if let Some(n) = e.get("tcp") {
        let tpath = join(path, "tcp");
        let twhat = format!("`tcp` of {what}");
        if let Some(t) = cx.map(n, &tpath, &twhat, &TCP_PROBE_KEYS, &format!("in {twhat}")) {
            spec.tcp =
                probe_port(cx, t.get("port"), &tpath, &twhat).map(|port| TcpProbeSpec { port });
        }
    }
    for (key, slot) in [
        ("period", &mut spec.period),
        ("timeout", &mut spec.timeout),
        ("initial_delay", &mut spec.initial_delay),
    ] {
        if let Some(n) = e.get(key) {
            *slot = cx.text(n, &join(path, key), &format!("`{key}` of {what}"));
        }
    }
    for (key, slot) in [
        ("failure_threshold", &mut spec.failure_threshold),
        ("success_threshold", &mut spec.success_threshold),
    ] {
        if let Some(n) = e.get(key) {
            *slot = cx.integer(
                n,
                &join(path, key),
                &format!("`{key}` of {what}"),
                "1 or more",
            );
        }
    }
    spec
}

/// The `port` of a probe's `http` or `tcp`: required, 1-65535.
fn probe_port(cx: &mut Issues, node: Option<&Node>, path: &str, what: &str) -> Option<u16> {
    let Some(n) = node else {
        cx.missing(path, "port", what);
        return None;
    };
    let port: Option<u16> = cx.integer(
        n,
        &join(path, "port"),
        &format!("`port` of {what}"),
        "1-65535",
    );
    match port {
        Some(0) => {
            cx.shape(
                &join(path, "port"),
                Anchor::Value,
                format!("`port` of {what} must be 1-65535, found `0`"),
            );
            None
        }
        other => other,
    }
}

fn healthcheck(cx: &mut Issues, node: &Node, path: &str, container: &str) -> HealthcheckSpec {
    let mut spec = HealthcheckSpec::default();
    let what = format!("`healthcheck` of {container}");
    let Some(e) = cx.map(node, path, &what, &HEALTHCHECK_KEYS, &format!("in {what}")) else {
        return spec;
    };
    if let Some(n) = e.get("test") {
        spec.test = command(cx, n, &join(path, "test"), "test", &what);
    }
    for (key, slot) in [
        ("interval", &mut spec.interval),
        ("timeout", &mut spec.timeout),
        ("start_period", &mut spec.start_period),
    ] {
        if let Some(n) = e.get(key) {
            *slot = cx.text(n, &join(path, key), &format!("`{key}` of {what}"));
        }
    }
    if let Some(n) = e.get("retries") {
        spec.retries = cx.integer(
            n,
            &join(path, "retries"),
            &format!("`retries` of {what}"),
            "1 or more",
        );
    }
    if let Some(n) = e.get("disable") {
        spec.disable = cx.boolean(n, &join(path, "disable"), &format!("`disable` of {what}"));
    }
    spec
}

fn resources(cx: &mut Issues, node: &Node, path: &str, what: &str) -> ResourcesSpec {
    let mut spec = ResourcesSpec::default();
    let context = format!("in `resources` of {what}");
    let Some(e) = cx.map(
        node,
        path,
        &format!("`resources` of {what}"),
        &RESOURCE_KEYS,
        &context,
    ) else {
        return spec;
    };
    if let Some(n) = e.get("cpu") {
        spec.cpu = cx
            .text(n, &join(path, "cpu"), &format!("`cpu` of {what}"))
            .map(Quantity);
    }
    if let Some(n) = e.get("memory") {
        spec.memory = cx
            .text(n, &join(path, "memory"), &format!("`memory` of {what}"))
            .map(Quantity);
    }
    if let Some(n) = e.get("pids") {
        spec.pids = cx.integer(
            n,
            &join(path, "pids"),
            &format!("`pids` of {what}"),
            "1 or more",
        );
    }
    if let Some(n) = e.get("requests") {
        let rpath = join(path, "requests");
        let rwhat = format!("`requests` of {what}");
        if let Some(r) = cx.map(n, &rpath, &rwhat, &REQUEST_KEYS, &format!("in {rwhat}")) {
            let (cpu, memory) = cpu_memory(cx, r, &rpath, &rwhat);
            spec.requests = Some(RequestsSpec { cpu, memory });
        }
    }
    spec
}

/// The `cpu` and `memory` quantities of a mapping (resources, requests, nodes, capacity).
fn cpu_memory(
    cx: &mut Issues,
    e: Entries<'_>,
    path: &str,
    what: &str,
) -> (Option<Quantity>, Option<Quantity>) {
    let mut quantity = |key: &str| {
        e.get(key).and_then(|n| {
            cx.text(n, &join(path, key), &format!("`{key}` of {what}"))
                .map(Quantity)
        })
    };
    (quantity("cpu"), quantity("memory"))
}

/// A node of `nodes:`; `None` (its path marked broken) when a required key is missing.
fn node_spec(cx: &mut Issues, node: &Node, path: &str, name: &str) -> Option<NodeSpec> {
    let what = format!("node `{name}`");
    let e = cx.map(node, path, &what, &NODE_KEYS, &format!("in {what}"))?;
    let (cpu, memory) = cpu_memory(cx, e, path, &what);
    let labels = e
        .get("labels")
        .map(|n| cx.string_map(n, &join(path, "labels"), &format!("`labels` of {what}")))
        .unwrap_or_default();
    for (key, value) in [("cpu", &cpu), ("memory", &memory)] {
        if value.is_none() && e.get(key).is_none() {
            cx.missing(
                path,
                key,
                &format!("{what} (a node's capacity is required)"),
            );
        }
    }
    match (cpu, memory) {
        (Some(cpu), Some(memory)) => Some(NodeSpec {
            cpu,
            memory,
            labels,
        }),
        _ => {
            cx.mark_broken(path);
            None
        }
    }
}

/// A fault of `faults:`; `None` (its path marked broken) when `target` is missing.
fn fault_spec(cx: &mut Issues, node: &Node, path: &str, name: &str) -> Option<FaultSpec> {
    let what = format!("fault `{name}`");
    let e = cx.map(node, path, &what, &FAULT_KEYS, &format!("in {what}"))?;
    let mut spec = FaultSpec::default();
    for (key, slot) in [
        ("peer", &mut spec.peer),
        ("latency", &mut spec.latency),
        ("jitter", &mut spec.jitter),
        ("loss", &mut spec.loss),
        ("bandwidth", &mut spec.bandwidth),
    ] {
        if let Some(n) = e.get(key) {
            *slot = cx.text(n, &join(path, key), &format!("`{key}` of {what}"));
        }
    }
    if let Some(n) = e.get("partition") {
        spec.partition = cx
            .boolean(
                n,
                &join(path, "partition"),
                &format!("`partition` of {what}"),
            )
            .unwrap_or(false);
    }
    match e.get("target") {
        Some(n) => {
            spec.target = cx.text(n, &join(path, "target"), &format!("`target` of {what}"))?
        }
        None => {
            cx.missing(path, "target", &what);
            cx.mark_broken(path);
            return None;
        }
    }
    Some(spec)
}

fn service(cx: &mut Issues, node: &Node, path: &str, name: &str) -> ServiceSpec {
    let mut spec = ServiceSpec::default();
    let what = format!("service `{name}`");
    let context = format!("in {what}");
    let Some(e) = cx.map(node, path, &what, &SERVICE_KEYS, &context) else {
        return spec;
    };
    match e.get("selector") {
        Some(n) => {
            spec.selector =
                cx.string_map(n, &join(path, "selector"), &format!("`selector` of {what}"));
        }
        None => cx.missing(path, "selector", &what),
    }
    if let Some(n) = e.get("ports") {
        let ppath = join(path, "ports");
        if let Some(items) = cx.list(n, &ppath, &format!("`ports` of {what}")) {
            for (i, item) in items.iter().enumerate() {
                spec.ports.push(port(cx, item, &index(&ppath, i), name));
            }
        }
    }
    if let Some(n) = e.get("balance") {
        let bpath = join(path, "balance");
        if let Some(text) = cx.text(n, &bpath, &format!("`balance` of {what}")) {
            spec.balance = Balance::parse(&text);
            if spec.balance.is_none() {
                let hint = suggest(&text, &BALANCES)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                cx.shape(
                    &bpath,
                    Anchor::Value,
                    format!("unknown balance `{text}` in {what}: expected `round_robin` or `least_conn`{hint}"),
                );
            }
        }
    }
    spec
}

const PORT_RANGE: &str = "a port number from 1 to 65535";

fn port(cx: &mut Issues, node: &Node, path: &str, service: &str) -> PortSpec {
    let placeholder = PortSpec::Short(String::new());
    let what = format!("a port of service `{service}`");
    match &node.kind {
        Kind::Scalar(s) if s.ty == ScalarType::Int => cx
            .integer(node, path, &what, PORT_RANGE)
            .map_or(placeholder, PortSpec::Number),
        Kind::Scalar(s) => PortSpec::Short(s.text.clone()),
        Kind::Map(_) => {
            let context = format!("in {what}");
            let Some(e) = cx.map(node, path, &what, &PORT_KEYS, &context) else {
                return placeholder;
            };
            let mut field = |key: &str| {
                e.get(key).and_then(|n| {
                    cx.integer::<u16>(
                        n,
                        &join(path, key),
                        &format!("`{key}` of {what}"),
                        PORT_RANGE,
                    )
                })
            };
            let port = field("port");
            let target = field("target");
            let publish = field("publish");
            let host_ip = e
                .get("host_ip")
                .and_then(|n| cx.text(n, &join(path, "host_ip"), &format!("`host_ip` of {what}")));
            match port {
                Some(port) => PortSpec::Long(PortMapping {
                    port,
                    target,
                    publish,
                    host_ip,
                }),
                None => {
                    if e.get("port").is_none() {
                        cx.missing(path, "port", &what);
                    }
                    cx.mark_broken(path);
                    placeholder
                }
            }
        }
        _ => {
            cx.wrong_type(
                node,
                path,
                &what,
                "a port number, a string like \"8080:80\" or a mapping",
            );
            placeholder
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::manifest::convert::{
        BACKOFF_KEYS, CONTAINER_KEYS, DEPENDENCY_KEYS, FILE_SOURCE_KEYS, FILE_USE_KEYS,
        HEALTHCHECK_KEYS, HTTP_PROBE_KEYS, IMAGE_KEYS, LAYER_KEYS, MOUNT_KEYS, POD_KEYS,
        POD_VOLUME_KEYS, PORT_KEYS, PROBE_KEYS, RESOURCE_KEYS, SERVICE_KEYS, TCP_PROBE_KEYS,
        TMPFS_KEYS, TOP_KEYS, UPDATE_KEYS, suggest,
    };
    use crate::manifest::convert::{CAPACITY_KEYS, FAULT_KEYS, NODE_KEYS, REQUEST_KEYS};
    use crate::manifest::schema_json;

    /// The converter's key lists must be exactly the serde model's fields.
    #[test]
    fn allowed_keys_match_the_schema() {
        let schema: serde_json::Value = serde_json::from_str(&schema_json()).unwrap();
        let keys = |v: &serde_json::Value| -> BTreeSet<String> {
            v["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        let set =
            |list: &[&str]| -> BTreeSet<String> { list.iter().map(|s| s.to_string()).collect() };
        assert_eq!(keys(&schema), set(&TOP_KEYS));
        for (def, list) in [
            ("ImageSpec", &IMAGE_KEYS[..]),
            ("LayerMount", &LAYER_KEYS[..]),
            ("PodSpec", &POD_KEYS[..]),
            ("DependencySpec", &DEPENDENCY_KEYS[..]),
            ("ContainerSpec", &CONTAINER_KEYS[..]),
            ("ResourcesSpec", &RESOURCE_KEYS[..]),
            ("ServiceSpec", &SERVICE_KEYS[..]),
            ("PortMapping", &PORT_KEYS[..]),
            ("PodVolumeSpec", &POD_VOLUME_KEYS[..]),
            ("LongMountSpec", &MOUNT_KEYS[..]),
            ("TmpfsSpec", &TMPFS_KEYS[..]),
            ("FileSourceSpec", &FILE_SOURCE_KEYS[..]),
            ("LongFileUseSpec", &FILE_USE_KEYS[..]),
            ("ProbeSpec", &PROBE_KEYS[..]),
            ("HttpProbeSpec", &HTTP_PROBE_KEYS[..]),
            ("TcpProbeSpec", &TCP_PROBE_KEYS[..]),
            ("HealthcheckSpec", &HEALTHCHECK_KEYS[..]),
            ("BackoffSpec", &BACKOFF_KEYS[..]),
            ("UpdateSpec", &UPDATE_KEYS[..]),
            ("NodeSpec", &NODE_KEYS[..]),
            ("CapacitySpec", &CAPACITY_KEYS[..]),
            ("RequestsSpec", &REQUEST_KEYS[..]),
            ("FaultSpec", &FAULT_KEYS[..]),
        ] {
            assert_eq!(keys(&schema["$defs"][def]), set(list), "{def}");
        }
    }

    #[test]
    fn suggestions_pick_close_names_only() {
        assert_eq!(suggest("replcas", &POD_KEYS), Some("replicas"));
        assert_eq!(suggest("dependson", &POD_KEYS), Some("depends_on"));
        assert_eq!(suggest("environment", &CONTAINER_KEYS), Some("env"));
        assert_eq!(suggest("hostname", &POD_KEYS), None);
    }
}
