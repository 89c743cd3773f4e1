//! L0, pure: Compose files (the Compose Specification) mapped onto the rcompose model.
//!
//! A Compose project (one file, plus the files it `include`s and `extends`) becomes a
//! [`Manifest`]: each service a pod of one container (both named after the service), its
//! `image` an image with `ref:`, its `ports` and `expose` a service of the same name served
//! by the balancer. Every key of the Compose Specification is either mapped, or reported: an
//! error where ignoring it would change what runs, a warning where it is harmless. Every
//! problem carries its file, line and column (the node tree of [`super::node`]), and all
//! problems of a project are reported in one run.
//!
//! No I/O here: files (`include`, `extends`, `env_file`, `.env`) and environment variables
//! come through [`Host`], which the CLI implements.

mod interpolate;
mod service;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use crate::manifest::convert::{self, Issues, join, suggest};
use crate::manifest::node::{self, Key, Kind, Loc, Node, Scalar, ScalarType};
use crate::manifest::{
    Facts, FileSourceSpec, Manifest, ManifestError, Problem, ValidManifest, VolumeSpec, validate,
};

/// What the Compose loader asks the caller about the world.
pub trait Host {
    /// The text of a file. `path` is relative to the project directory (the main Compose
    /// file's directory) or absolute. `Err` is the reason it cannot be read.
    ///
    /// # Errors
    ///
    /// The file cannot be read (missing, not UTF-8, ...): a lower-case reason.
    fn read_file(&self, path: &Path) -> Result<String, String>;
    /// Whether a file exists (`.env` is optional).
    fn file_exists(&self, path: &Path) -> bool;
    /// An environment variable of the process (it overrides the project's `.env`).
    fn env(&self, name: &str) -> Option<String>;
}

/// Choices of the user that change how a project loads.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Profiles to enable (`--profile`; `COMPOSE_PROFILES` is read through [`Host::env`]).
    pub profiles: Vec<String>,
}

/// A loaded Compose project.
#[derive(Debug)]
pub struct Loaded {
    /// The validated manifest.
    pub valid: ValidManifest,
    /// The equivalent `rcompose.yaml`, as written by `rcompose convert`.
    pub manifest: Manifest,
}

/// What [`load`] gives: the project or its problems, and the warnings in any case.
#[derive(Debug)]
pub struct Outcome {
    /// The project, or every problem of it.
    pub result: Result<Loaded, ManifestError>,
    /// Keys that were ignored (harmlessly) and unset variables, with their places.
    pub warnings: Vec<Problem>,
}

/// Whether a file is a Compose file rather than an `rcompose.yaml`: by its name
/// (`compose.yaml`, `docker-compose.yml`, ...), else by its content (a top-level `services:`
/// with no `pods:` or `images:`).
#[must_use]
pub fn is_compose(path: &Path, source: &str) -> bool {
    let name = file_name(path);
    if name == "rcompose.yaml" || name == "rcompose.yml" {
        return false;
    }
    if name.starts_with("compose.") || name.starts_with("docker-compose") {
        return true;
    }
    has_top(source, "services") && !has_top(source, "pods") && !has_top(source, "images")
}

/// Whether a file is surely an `rcompose.yaml`, not a part of a Compose project (an override
/// file may hold any top-level key, or none): by its name, or by a top-level `pods:` or
/// `images:`, which no Compose file has.
#[must_use]
pub fn is_rcompose(path: &Path, source: &str) -> bool {
    let name = file_name(path);
    name == "rcompose.yaml"
        || name == "rcompose.yml"
        || has_top(source, "pods")
        || has_top(source, "images")
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
}

/// Whether `source` has the top-level key `key` (a line starting with `key:`).
fn has_top(source: &str, key: &str) -> bool {
    source
        .lines()
        .any(|l| l.starts_with(key) && l[key.len()..].trim_start().starts_with(':'))
}

/// One file of a project the user names (`-f`): its path as named (for messages) and its
/// text.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The path as the user named it.
    pub path: &'a Path,
    /// The file's text.
    pub text: &'a str,
}

/// The top-level keys of the Compose Specification.
const TOP_KEYS: [&str; 9] = [
    "version", "name", "include", "services", "networks", "volumes", "secrets", "configs", "models",
];

/// One file of the project: its tree, its directory (relative to the project directory),
/// its number for locations, and the variables it is interpolated with.
#[derive(Debug, Clone)]
pub(crate) struct File {
    pub(crate) tree: Node,
    pub(crate) dir: PathBuf,
    pub(crate) name: PathBuf,
}

/// The loader's state: problems, warnings and the files read so far.
pub(crate) struct Loader<'a> {
    pub(crate) cx: Issues,
    pub(crate) warnings: Vec<(String, Loc, String)>,
    pub(crate) host: &'a dyn Host,
    /// The project's variables: the process environment over `.env`.
    dotenv: BTreeMap<String, String>,
    /// Unset variables already warned about.
    warned: BTreeSet<String>,
    /// Files read, by path (relative to the project directory, normalized).
    files: BTreeMap<PathBuf, Option<File>>,
    /// The main file's directory as the user named it (to name the other files in messages).
    origin_dir: PathBuf,
    /// Mapping keys tagged `!reset` or `!override`, by their place (file, line, column).
    pub(crate) tagged: BTreeMap<(u32, u32, u32), Tag>,
}

/// Compose's merge tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    /// `!reset`: the key is removed from the merged result.
    Reset,
    /// `!override`: the value replaces the one it is merged over, without merging.
    Override,
}

impl Loader<'_> {
    /// The tag of a mapping key, if it has one (where the key is written: a key an anchor
    /// gives a service has the tag written in the anchor).
    pub(crate) fn tag(&self, key: &Key) -> Option<Tag> {
        self.tagged
            .get(&(key.def.file, key.def.line, key.def.column))
            .copied()
    }
}

/// Where every mapping key of a tree is written.
fn map_keys(node: &Node, out: &mut Vec<Loc>) {
    match &node.kind {
        Kind::Map(entries) => {
            for (key, value) in entries {
                out.push(key.def);
                map_keys(value, out);
            }
        }
        Kind::Seq(items) => {
            for item in items {
                map_keys(item, out);
            }
        }
        Kind::Scalar(_) | Kind::Null => {}
    }
}

impl std::fmt::Debug for Loader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader").finish_non_exhaustive()
    }
}

impl Loader<'_> {
    pub(crate) fn error(&mut self, path: &str, loc: Loc, message: String) {
        self.cx.at(path, loc, message);
    }

    pub(crate) fn warn(&mut self, path: &str, loc: Loc, message: String) {
        self.warnings.push((path.to_string(), loc, message));
    }

    /// A variable: the process environment first, then `.env`.
    pub(crate) fn var(&self, name: &str) -> Option<String> {
        self.host
            .env(name)
            .or_else(|| self.dotenv.get(name).cloned())
    }

    /// Reads and parses another file of the project (`include`, `extends`, ...), once.
    /// `at` is where it is named, for the problem if it cannot be read.
    fn file(
        &mut self,
        path: &Path,
        at: (&str, Loc),
        env: Option<&BTreeMap<String, String>>,
    ) -> Option<File> {
        let path = normalize(path);
        if let Some(f) = self.files.get(&path) {
            return f.clone();
        }
        let text = match self.host.read_file(&path) {
            Ok(t) => t,
            Err(reason) => {
                self.error(
                    at.0,
                    at.1,
                    format!("cannot read `{}`: {reason}", path.display()),
                );
                self.files.insert(path, None);
                return None;
            }
        };
        let number = self.cx.add_file(self.origin_dir.join(&path), text.clone());
        let file = self.parse(&text, number, &path, env);
        self.files.insert(path, file.clone());
        file
    }

    /// Parses one file's text: syntax, tags, interpolation.
    fn parse(
        &mut self,
        text: &str,
        number: u32,
        path: &Path,
        env: Option<&BTreeMap<String, String>>,
    ) -> Option<File> {
        let mut tree = match node::parse_tree(text) {
            Ok(t) => t,
            Err(e) => {
                let loc = e.loc.map_or(
                    Loc {
                        line: 1,
                        column: 1,
                        len: 1,
                        file: number,
                    },
                    |l| Loc { file: number, ..l },
                );
                self.error("", loc, e.message);
                return None;
            }
        };
        set_file(&mut tree, number);
        self.tags(text, number, &tree);
        let lines: Vec<&str> = text.lines().collect();
        self.key_types(&tree, &lines, "");
        self.interpolate(&mut tree, "", env);
        let dir = path.parent().map_or_else(PathBuf::new, Path::to_path_buf);
        Some(File {
            tree,
            dir,
            name: path.to_path_buf(),
        })
    }

    /// The YAML tags Compose gives a meaning to (`!reset`, `!override`) are not applied by
    /// the YAML reader: refuse them where they are, rather than load something else.
    fn tags(&mut self, text: &str, number: u32, tree: &Node) {
        let mut found: Vec<(Loc, Tag)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            // the code before a comment (`#` at the start or after a blank)
            let end = line
                .char_indices()
                .find(|&(i, c)| c == '#' && (i == 0 || line[..i].ends_with([' ', '\t'])))
                .map_or(line.len(), |(i, _)| i);
            let code = &line[..end];
            for (name, tag) in [("!reset", Tag::Reset), ("!override", Tag::Override)] {
                if let Some(col) = code.find(name)
                    && !code[..col].contains(['"', '\''])
                {
                    let loc = Loc {
                        line: u32::try_from(n + 1).unwrap_or(u32::MAX),
                        column: u32::try_from(code[..col].chars().count() + 1).unwrap_or(1),
                        len: u32::try_from(name.len()).unwrap_or(1),
                        file: number,
                    };
                    found.push((loc, tag));
                }
            }
        }
        if found.is_empty() {
            return;
        }
        // tags are honoured inside services (where `extends` and the files named merge): the
        // keys under them, written there or in an anchor a service merges (`<<: *base`)
        let mut in_services = Vec::new();
        if let Some(services) = get(tree, "services") {
            for (_, service) in entries(services) {
                map_keys(service, &mut in_services);
            }
        }
        // the YAML reader drops tags: a tag belongs to the mapping entry whose key is on its
        // line, before it (`ports: !reset []`)
        let mut keys = Vec::new();
        map_keys(tree, &mut keys);
        for (loc, tag) in found {
            let owner = keys
                .iter()
                .filter(|k| k.line == loc.line && k.column < loc.column)
                .max_by_key(|k| k.column);
            let name = if tag == Tag::Reset {
                "!reset"
            } else {
                "!override"
            };
            match owner {
                Some(k) if in_services.contains(k) => {
                    self.tagged.insert((k.file, k.line, k.column), tag);
                }
                Some(_) => self.error(
                    "",
                    loc,
                    format!("the YAML tag `{name}` is only supported on the keys of a service (or of an anchor a service merges)"),
                ),
                None => {
                    self.error(
                        "",
                        loc,
                        format!("the YAML tag `{name}` is only supported on the value of a mapping key (`ports: {name} []`)"),
                    );
                }
            }
        }
    }

    /// Compose wants string keys: a plain (unquoted) key that YAML reads as a number,
    /// boolean or null is an error (`123:` as a service name, `1:` in `environment`).
    fn key_types(&mut self, node: &Node, lines: &[&str], path: &str) {
        match &node.kind {
            Kind::Map(entries) => {
                for (key, value) in entries {
                    let p = join(path, &key.name);
                    let quoted = lines
                        .get((key.loc.line as usize).wrapping_sub(1))
                        .and_then(|l| l.chars().nth((key.loc.column as usize).wrapping_sub(1)))
                        .is_some_and(|c| c == '"' || c == '\'');
                    let n = key.name.as_str();
                    let typed = n.parse::<f64>().is_ok()
                        || matches!(
                            n,
                            "true" | "false" | "True" | "False" | "TRUE" | "FALSE" | "null" | "~"
                        );
                    if typed && !quoted && key.loc.line > 0 {
                        let at = if path.is_empty() {
                            "at the top level".to_string()
                        } else {
                            format!("in `{path}`")
                        };
                        self.error(
                            &p,
                            key.loc,
                            format!("non-string key `{n}` {at}: quote it (`\"{n}\"`)"),
                        );
                    }
                    self.key_types(value, lines, &p);
                }
            }
            Kind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.key_types(item, lines, &convert::index(path, i));
                }
            }
            Kind::Scalar(_) | Kind::Null => {}
        }
    }

    /// Interpolates every scalar of the tree in place (keys are not interpolated, as in
    /// Compose).
    fn interpolate(&mut self, node: &mut Node, path: &str, env: Option<&BTreeMap<String, String>>) {
        match &mut node.kind {
            Kind::Map(entries) => {
                for (key, value) in entries.iter_mut() {
                    let p = join(path, &key.name);
                    self.interpolate(value, &p, env);
                }
            }
            Kind::Seq(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.interpolate(item, &convert::index(path, i), env);
                }
            }
            Kind::Scalar(s) => {
                if !s.text.contains('$') {
                    return;
                }
                let lookup = |name: &str| {
                    self.host
                        .env(name)
                        .or_else(|| env.and_then(|e| e.get(name).cloned()))
                        .or_else(|| self.dotenv.get(name).cloned())
                };
                match interpolate::interpolate(&s.text, &lookup) {
                    Ok(out) => {
                        s.text = out.text;
                        s.ty = ScalarType::Str;
                        for name in out.unset {
                            if self.warned.insert(name.clone()) {
                                self.warnings.push((
                                    path.to_string(),
                                    node.loc,
                                    format!(
                                        "the variable `{name}` is not set: using an empty string"
                                    ),
                                ));
                            }
                        }
                    }
                    Err(message) => self.cx.at(path, node.loc, message),
                }
            }
            Kind::Null => {}
        }
    }
}

fn set_file(node: &mut Node, number: u32) {
    node.loc.file = number;
    match &mut node.kind {
        Kind::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                key.loc.file = number;
                key.def.file = number;
                set_file(value, number);
            }
        }
        Kind::Seq(items) => {
            for item in items {
                set_file(item, number);
            }
        }
        Kind::Scalar(_) | Kind::Null => {}
    }
}

/// `a/./b/../c` -> `a/c` (without touching the file system); leading `..` are kept.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// A path written in a file of `dir` (relative to the project directory), made relative
/// to the project directory (absolute paths stay; `~` is left to the caller).
pub(crate) fn rebase(dir: &Path, path: &str) -> String {
    if dir.as_os_str().is_empty() || Path::new(path).is_absolute() || path.starts_with('~') {
        return path.to_string();
    }
    let joined = normalize(&dir.join(path));
    let text = joined.to_string_lossy().to_string();
    if text.starts_with('/') || text.starts_with("..") {
        text
    } else {
        format!("./{text}")
    }
}

// ---- small accessors over the node tree ----

/// The entries of a mapping node.
pub(crate) fn entries(node: &Node) -> &[(Key, Node)] {
    match &node.kind {
        Kind::Map(e) => e,
        _ => &[],
    }
}

/// The value of `key` in a mapping node.
pub(crate) fn get<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    entries(node)
        .iter()
        .find(|(k, _)| k.name == key)
        .map(|(_, v)| v)
}

/// The text of a scalar.
pub(crate) fn scalar(node: &Node) -> Option<&str> {
    match &node.kind {
        Kind::Scalar(Scalar { text, .. }) => Some(text),
        _ => None,
    }
}

impl Loader<'_> {
    /// A scalar's text, or an error naming `what`.
    pub(crate) fn text(&mut self, node: &Node, path: &str, what: &str) -> Option<String> {
        match &node.kind {
            Kind::Scalar(s) => Some(s.text.clone()),
            other => {
                let found = other.describe();
                self.error(
                    path,
                    node.loc,
                    format!("wrong type for {what}: expected a string, found {found}"),
                );
                None
            }
        }
    }

    /// A mapping's entries (null counts as empty), or an error naming `what`.
    pub(crate) fn map<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        what: &str,
    ) -> Option<&'n [(Key, Node)]> {
        match &node.kind {
            Kind::Map(e) => Some(e),
            Kind::Null => Some(&[]),
            other => {
                let found = other.describe();
                self.error(
                    path,
                    node.loc,
                    format!("wrong type for {what}: expected a mapping, found {found}"),
                );
                None
            }
        }
    }

    /// A list's items (null counts as empty), or an error naming `what`.
    pub(crate) fn list<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        what: &str,
    ) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            Kind::Null => Some(&[]),
            other => {
                let found = other.describe();
                self.error(
                    path,
                    node.loc,
                    format!("wrong type for {what}: expected a list, found {found}"),
                );
                None
            }
        }
    }

    /// A string, or a list of strings (`env_file`, `profiles`, `tmpfs`, ...).
    pub(crate) fn strings(&mut self, node: &Node, path: &str, what: &str) -> Vec<(String, Loc)> {
        match &node.kind {
            Kind::Scalar(s) => vec![(s.text.clone(), node.loc)],
            Kind::Null => Vec::new(),
            Kind::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    let p = convert::index(path, i);
                    self.text(n, &p, what).map(|t| (t, n.loc))
                })
                .collect(),
            Kind::Map(_) => {
                self.error(
                    path,
                    node.loc,
                    format!("wrong type for {what}: expected a string or a list, found a mapping"),
                );
                Vec::new()
            }
        }
    }

    /// A non-negative integer (numbers written as strings too, after interpolation).
    pub(crate) fn uint(&mut self, node: &Node, path: &str, what: &str) -> Option<u64> {
        let text = self.text(node, path, what)?;
        if let Ok(n) = text.trim().parse::<u64>() {
            return Some(n);
        }
        let message = if text.trim().starts_with('-') {
            format!("{what} must be 0 or more, found `{text}`")
        } else {
            format!("wrong type for {what}: expected an integer, found `{text}`")
        };
        self.error(path, node.loc, message);
        None
    }

    /// A boolean (`true`/`false`, also as strings).
    pub(crate) fn boolean(&mut self, node: &Node, path: &str, what: &str) -> Option<bool> {
        let text = self.text(node, path, what)?;
        match text.as_str() {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => {
                self.error(
                    path,
                    node.loc,
                    format!("wrong type for {what}: expected `true` or `false`, found `{text}`"),
                );
                None
            }
        }
    }

    /// Reports keys of a mapping that are not in `known` (`x-` keys are extensions).
    pub(crate) fn unknown_keys(&mut self, node: &Node, path: &str, known: &[&str], context: &str) {
        for (key, _) in entries(node) {
            if key.name.starts_with("x-") || known.contains(&key.name.as_str()) {
                continue;
            }
            let message = match suggest(&key.name, known) {
                Some(s) => format!("unknown key `{}` {context}; did you mean `{s}`?", key.name),
                None => format!("unknown key `{}` {context}", key.name),
            };
            self.error(&join(path, &key.name), key.loc, message);
        }
    }
}

/// Loads a Compose project from its main file: `source` is its text, `origin` its path as
/// the user named it (for messages; other files are named relative to its directory).
/// `facts` is asked whether bind sources and secret files exist, as for `rcompose.yaml`.
#[must_use]
pub fn load(
    source: &str,
    origin: &Path,
    host: &dyn Host,
    options: &Options,
    facts: &Facts<'_>,
) -> Outcome {
    load_files(
        &[Source {
            path: origin,
            text: source,
        }],
        host,
        options,
        facts,
    )
}

/// Loads a Compose project from several files (`-f a -f b`): each is read as a Compose file
/// (with its own `include`s) and merged over the ones before it by the Compose
/// Specification's merge rules ([`service::merge`]). The first file's directory is the
/// project directory, and relative paths of every file start there, as in Compose. Problems
/// are reported in the file they come from.
#[must_use]
pub fn load_files(
    files: &[Source<'_>],
    host: &dyn Host,
    options: &Options,
    facts: &Facts<'_>,
) -> Outcome {
    let Some(first) = files.first() else {
        let mut cx = Issues::default();
        cx.at("", Loc::default(), "no Compose file is named".into());
        return Outcome {
            result: Err(cx.into_error("", Path::new("")).of_compose()),
            warnings: Vec::new(),
        };
    };
    let (source, origin) = (first.text, first.path);
    let mut ld = Loader {
        cx: Issues::default(),
        warnings: Vec::new(),
        host,
        dotenv: BTreeMap::new(),
        warned: BTreeSet::new(),
        files: BTreeMap::new(),
        origin_dir: origin.parent().map_or_else(PathBuf::new, Path::to_path_buf),
        tagged: BTreeMap::new(),
    };
    ld.read_dotenv(Path::new(".env"), None);
    let manifest = project(&mut ld, files, options);
    let mut cx = ld.cx;
    let warnings = {
        let mut w = Issues::default();
        w.copy_files(&cx);
        for (path, loc, message) in ld.warnings {
            w.at(&path, loc, message);
        }
        w.into_error(source, origin).problems().to_vec()
    };
    let result = match manifest {
        Some(m) if cx.is_empty() => {
            let valid = validate::validate(&m, &mut cx, facts);
            if cx.is_empty() {
                Ok(Loaded { valid, manifest: m })
            } else {
                Err(cx.into_error(source, origin).of_compose())
            }
        }
        _ => Err(cx.into_error(source, origin).of_compose()),
    };
    Outcome { result, warnings }
}

impl Loader<'_> {
    /// Reads a `.env`-format file into the project variables (`into` = None) or returns it.
    fn read_dotenv(
        &mut self,
        path: &Path,
        at: Option<(&str, Loc)>,
    ) -> Option<BTreeMap<String, String>> {
        if at.is_none() && !self.host.file_exists(path) {
            return None;
        }
        let text = match self.host.read_file(path) {
            Ok(t) => t,
            Err(reason) => {
                let (p, loc) = at.unwrap_or(("", Loc::default()));
                self.error(
                    p,
                    loc,
                    format!("cannot read `{}`: {reason}", path.display()),
                );
                return None;
            }
        };
        let host = self.host;
        let known = self.dotenv.clone();
        let lookup = |name: &str| host.env(name).or_else(|| known.get(name).cloned());
        match interpolate::parse_env_file(&text, &lookup) {
            Ok(pairs) => {
                let map: BTreeMap<String, String> = pairs
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v)))
                    .collect();
                if at.is_none() {
                    self.dotenv.clone_from(&map);
                }
                Some(map)
            }
            Err((line, message)) => {
                let number = self.cx.add_file(self.origin_dir.join(path), text);
                let loc = Loc {
                    line: u32::try_from(line).unwrap_or(1),
                    column: 1,
                    len: 1,
                    file: number,
                };
                self.error("", loc, message);
                None
            }
        }
    }

    /// An `env_file` of a service: its variables in order (`None` values: unset), or
    /// `None` if it could not be read (reported) or is optional and missing.
    pub(crate) fn env_file(
        &mut self,
        path: &Path,
        at: (&str, Loc),
        required: bool,
    ) -> Option<Vec<(String, Option<String>)>> {
        if !required && !self.host.file_exists(path) {
            return None;
        }
        let text = match self.host.read_file(path) {
            Ok(t) => t,
            Err(reason) => {
                self.error(
                    at.0,
                    at.1,
                    format!("cannot read the env file `{}`: {reason}", path.display()),
                );
                return None;
            }
        };
        let lookup = |name: &str| self.var(name);
        match interpolate::parse_env_file(&text, &lookup) {
            Ok(pairs) => Some(pairs),
            Err((line, message)) => {
                let number = self.cx.add_file(self.origin_dir.join(path), text);
                let loc = Loc {
                    line: u32::try_from(line).unwrap_or(1),
                    column: 1,
                    len: 1,
                    file: number,
                };
                self.error(at.0, loc, message);
                None
            }
        }
    }
}

/// The services of the project (from every file), with the directory of the file each
/// came from, after `include`.
#[derive(Default)]
struct Collected {
    services: BTreeMap<String, (Key, Node, PathBuf)>,
    volumes: BTreeMap<String, (Key, Node)>,
    secrets: BTreeMap<String, (Key, Node, PathBuf)>,
    configs: BTreeMap<String, (Key, Node, PathBuf)>,
    networks: BTreeMap<String, (Key, Node)>,
}

/// Parses one file the user named (`number` 0 for the first) and checks its top level:
/// `None` when there is nothing to take from it (reported, or an empty override file).
fn named_file(ld: &mut Loader<'_>, source: &Source<'_>, number: u32) -> Option<File> {
    let path = source.path;
    let file = ld.parse(
        source.text,
        number,
        Path::new(path.file_name().unwrap_or(path.as_os_str())),
        None,
    )?;
    // relative paths start at the project directory, in every file named (as in Compose)
    let file = File {
        dir: PathBuf::new(),
        ..file
    };
    let root = &file.tree;
    match &root.kind {
        Kind::Map(_) => {}
        // an empty override file adds nothing
        Kind::Null if number > 0 => return None,
        Kind::Null => {
            ld.error(
                "",
                root.loc,
                "the Compose file is empty: declare `services`".into(),
            );
            return None;
        }
        other => {
            let found = other.describe();
            ld.error(
                "",
                root.loc,
                format!("the top level of a Compose file must be a mapping, found {found}"),
            );
            return None;
        }
    }
    if get(root, "services").is_none()
        && entries(root)
            .iter()
            .any(|(_, v)| get(v, "image").is_some() || get(v, "build").is_some())
    {
        ld.error("", root.loc, "Compose file format v1 (services at the top level) is not supported: put them under `services:`".into());
    }
    Some(file)
}

fn project(ld: &mut Loader<'_>, files: &[Source<'_>], options: &Options) -> Option<Manifest> {
    let (first, rest) = files.split_first()?;
    let main = named_file(ld, first, 0)?;
    let mut m = Manifest::default();
    if let Some(n) = get(&main.tree, "name") {
        m.name = ld.text(n, "name", "`name`");
    }
    let mut all = Collected::default();
    let mut stack = vec![main.name.clone()];
    collect(ld, &main, &mut all, &mut stack);
    // the other files named, each with its includes, merged over the ones before
    for source in rest {
        let number = ld
            .cx
            .add_file(source.path.to_path_buf(), source.text.to_string());
        let Some(file) = named_file(ld, source, number) else {
            continue;
        };
        if let Some(n) = get(&file.tree, "name") {
            m.name = ld.text(n, "name", "`name`");
        }
        let mut over = Collected::default();
        let mut stack = vec![file.name.clone()];
        collect(ld, &file, &mut over, &mut stack);
        overlay(ld, &mut all, over);
    }

    // profiles
    let mut active: BTreeSet<String> = options.profiles.iter().cloned().collect();
    if let Some(env) = ld.var("COMPOSE_PROFILES") {
        active.extend(
            env.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    let mut services = BTreeMap::new();
    let mut disabled = BTreeMap::new();
    for (name, (key, node, dir)) in &all.services {
        let path = join("services", name);
        let resolved = service::extends(ld, name, node, dir, &all_services_of(&all), &path);
        let profiles = get(&resolved.0, "profiles")
            .map(|p| ld.strings(p, &join(&path, "profiles"), "`profiles`"))
            .unwrap_or_default();
        let on = profiles.is_empty()
            || active.contains("*")
            || profiles.iter().any(|(p, _)| active.contains(p));
        if on {
            services.insert(name.clone(), (key.clone(), resolved.0, resolved.1));
        } else {
            disabled.insert(
                name.clone(),
                profiles.into_iter().map(|(p, _)| p).collect::<Vec<_>>(),
            );
        }
    }
    for (name, (key, node, dir)) in &services {
        service::service(ld, &mut m, name, key, node, dir, &services, &disabled);
    }
    // named volumes
    for (name, (key, node)) in &all.volumes {
        let path = join("volumes", name);
        volume(ld, node, &path, name);
        ld.cx.place(&path, key.loc, node.loc);
        m.volumes.insert(name.clone(), Some(VolumeSpec {}));
    }
    for (kind, list, target) in [
        ("secrets", &all.secrets, &mut m.secrets),
        ("configs", &all.configs, &mut m.configs),
    ] {
        for (name, (key, node, dir)) in list {
            let path = join(kind, name);
            ld.cx.place(&path, key.loc, node.loc);
            if let Some(spec) = file_source(ld, node, &path, kind, name, dir) {
                target.insert(name.clone(), spec);
            }
        }
    }
    for (name, (key, node)) in &all.networks {
        let path = join("networks", name);
        let external = get(node, "external").and_then(|ext| match &ext.kind {
            // the legacy `external: { name: x }`
            Kind::Map(_) => Some(true),
            _ => ld.boolean(ext, &join(&path, "external"), "`external`"),
        });
        if external == Some(true) {
            ld.error(&path, key.loc, format!("the external network `{name}` is not supported: every project has one network of its own"));
        } else {
            ld.warn(
                &path,
                key.loc,
                format!(
                    "the network `{name}` is ignored: every service is on the project's one network"
                ),
            );
        }
    }
    Some(m)
}

/// Merges the services, volumes, networks, secrets and configs of a later file over those
/// of the files before it. Paths are made relative to the project directory first, so that
/// a merged entry has one directory.
fn overlay(ld: &Loader<'_>, all: &mut Collected, over: Collected) {
    for (name, (key, node, dir)) in over.services {
        let merged = match all.services.remove(&name) {
            Some((base_key, base, base_dir)) => (
                base_key,
                service::merge(
                    ld,
                    &service::rebased(&base, &base_dir),
                    &service::rebased(&node, &dir),
                ),
                PathBuf::new(),
            ),
            None => (key, node, dir),
        };
        all.services.insert(name, merged);
    }
    for (list, more) in [
        (&mut all.volumes, over.volumes),
        (&mut all.networks, over.networks),
    ] {
        for (name, (key, node)) in more {
            let merged = match list.remove(&name) {
                Some((base_key, base)) => (base_key, service::merge(ld, &base, &node)),
                None => (key, node),
            };
            list.insert(name, merged);
        }
    }
    for (list, more) in [
        (&mut all.secrets, over.secrets),
        (&mut all.configs, over.configs),
    ] {
        for (name, (key, node, dir)) in more {
            let merged = match list.remove(&name) {
                Some((base_key, base, base_dir)) => (
                    base_key,
                    service::merge(
                        ld,
                        &rebased_file(&base, &base_dir),
                        &rebased_file(&node, &dir),
                    ),
                    PathBuf::new(),
                ),
                None => (key, node, dir),
            };
            list.insert(name, merged);
        }
    }
}

/// A secret or config with its `file` made relative to the project directory.
fn rebased_file(node: &Node, dir: &Path) -> Node {
    let mut n = node.clone();
    if let Kind::Map(entries) = &mut n.kind {
        for (k, v) in entries.iter_mut() {
            if let (true, Kind::Scalar(s)) = (k.name == "file", &mut v.kind) {
                s.text = rebase(dir, &s.text);
            }
        }
    }
    n
}

fn all_services_of(all: &Collected) -> BTreeMap<String, (Node, PathBuf)> {
    all.services
        .iter()
        .map(|(k, (_, n, d))| (k.clone(), (n.clone(), d.clone())))
        .collect()
}

/// Gathers the services, volumes, secrets, configs and networks of `file` and of the files
/// it includes (depth first; `stack` holds the include chain, for cycles).
fn collect(ld: &mut Loader<'_>, file: &File, all: &mut Collected, stack: &mut Vec<PathBuf>) {
    let root = &file.tree;
    ld.unknown_keys(root, "", &TOP_KEYS, "at the top level of a Compose file");
    if let Some((key, _)) = entries(root).iter().find(|(k, _)| k.name == "version") {
        ld.warn(
            "version",
            key.loc,
            "`version` is obsolete and ignored (as by Compose)".into(),
        );
    }
    if let Some((key, _)) = entries(root).iter().find(|(k, _)| k.name == "models") {
        ld.error(
            "models",
            key.loc,
            "`models` is not supported: rcompose runs no AI models".into(),
        );
    }
    if let Some(inc) = get(root, "include")
        && let Some(items) = ld.list(inc, "include", "`include`")
    {
        for (i, item) in items.iter().enumerate() {
            let path = convert::index("include", i);
            let (paths, env_files) = match &item.kind {
                Kind::Scalar(s) => (vec![(s.text.clone(), item.loc)], Vec::new()),
                Kind::Map(_) => {
                    ld.unknown_keys(
                        item,
                        &path,
                        &["path", "project_directory", "env_file"],
                        "in an `include` entry",
                    );
                    if let Some((k, _)) = entries(item)
                        .iter()
                        .find(|(k, _)| k.name == "project_directory")
                    {
                        ld.error(&join(&path, "project_directory"), k.loc, "`project_directory` of `include` is not supported: paths are relative to each included file".into());
                    }
                    let paths = get(item, "path")
                        .map(|p| ld.strings(p, &join(&path, "path"), "`path`"))
                        .unwrap_or_default();
                    if paths.is_empty() {
                        ld.error(&path, item.loc, "an `include` entry needs a `path`".into());
                    }
                    let envs = get(item, "env_file")
                        .map(|p| ld.strings(p, &join(&path, "env_file"), "`env_file`"))
                        .unwrap_or_default();
                    (paths, envs)
                }
                other => {
                    let found = other.describe();
                    ld.error(&path, item.loc, format!("wrong type for an `include` entry: expected a path or a mapping, found {found}"));
                    continue;
                }
            };
            let mut env = BTreeMap::new();
            for (e, loc) in &env_files {
                let p = PathBuf::from(rebase(&file.dir, e));
                if let Some(vars) = ld.read_dotenv(&p, Some((&path, *loc))) {
                    env.extend(vars);
                }
            }
            for (p, loc) in paths {
                let target = normalize(&PathBuf::from(rebase(&file.dir, &p)));
                if stack.contains(&target) {
                    let chain: Vec<String> = stack
                        .iter()
                        .chain([&target])
                        .map(|p| format!("`{}`", p.display()))
                        .collect();
                    ld.error(&path, loc, format!("include cycle: {}", chain.join(" -> ")));
                    continue;
                }
                // the included file's own .env gives defaults to its variables
                let dir = target.parent().map_or_else(PathBuf::new, Path::to_path_buf);
                if env_files.is_empty() {
                    let own = dir.join(".env");
                    if ld.host.file_exists(&own)
                        && let Some(vars) = ld.read_dotenv(&own, Some((&path, loc)))
                    {
                        env.extend(vars);
                    }
                }
                let Some(inc) = ld.file(&target, (&path, loc), Some(&env)) else {
                    continue;
                };
                stack.push(target);
                let before: BTreeSet<String> = all.services.keys().cloned().collect();
                let mut sub = Collected::default();
                collect(ld, &inc, &mut sub, stack);
                stack.pop();
                for (name, entry) in sub.services {
                    if before.contains(&name) {
                        ld.error(
                            &path,
                            loc,
                            format!(
                                "the service `{name}` of the included `{}` is already defined",
                                p
                            ),
                        );
                    } else {
                        all.services.insert(name, entry);
                    }
                }
                all.volumes.extend(sub.volumes);
                all.secrets.extend(sub.secrets);
                all.configs.extend(sub.configs);
                all.networks.extend(sub.networks);
            }
        }
    }
    if let Some(node) = get(root, "services")
        && let Some(list) = ld.map(node, "services", "`services`")
    {
        for (key, value) in list {
            let path = join("services", &key.name);
            if !matches!(value.kind, Kind::Map(_) | Kind::Null) {
                let found = value.kind.describe();
                ld.error(
                    &path,
                    value.loc,
                    format!(
                        "wrong type for the service `{}`: expected a mapping, found {found}",
                        key.name
                    ),
                );
                continue;
            }
            if all.services.contains_key(&key.name) {
                ld.error(
                    &path,
                    key.loc,
                    format!(
                        "the service `{}` is already defined by an included file",
                        key.name
                    ),
                );
                continue;
            }
            all.services.insert(
                key.name.clone(),
                (key.clone(), value.clone(), file.dir.clone()),
            );
        }
    }
    if let Some(node) = get(root, "volumes")
        && let Some(list) = ld.map(node, "volumes", "`volumes`")
    {
        for (key, value) in list {
            all.volumes
                .insert(key.name.clone(), (key.clone(), value.clone()));
        }
    }
    for kind in ["secrets", "configs"] {
        if let Some(node) = get(root, kind)
            && let Some(list) = ld.map(node, kind, &format!("`{kind}`"))
        {
            let target = if kind == "secrets" {
                &mut all.secrets
            } else {
                &mut all.configs
            };
            for (key, value) in list {
                target.insert(
                    key.name.clone(),
                    (key.clone(), value.clone(), file.dir.clone()),
                );
            }
        }
    }
    if let Some(node) = get(root, "networks")
        && let Some(list) = ld.map(node, "networks", "`networks`")
    {
        for (key, value) in list {
            all.networks
                .insert(key.name.clone(), (key.clone(), value.clone()));
        }
    }
}

/// A top-level named volume: only the default local driver without options is supported.
fn volume(ld: &mut Loader<'_>, node: &Node, path: &str, name: &str) {
    let Some(list) = ld.map(node, path, &format!("the volume `{name}`")) else {
        return;
    };
    ld.unknown_keys(
        node,
        path,
        &["driver", "driver_opts", "external", "labels", "name"],
        &format!("in the volume `{name}`"),
    );
    for (key, value) in list {
        let p = join(path, &key.name);
        match key.name.as_str() {
            "driver" if scalar(value) != Some("local") => {
                let driver = scalar(value).unwrap_or_default();
                ld.error(&p, value.loc, format!("the volume driver `{driver}` is not supported: volumes are directories of the data dir (driver `local`)"));
            }
            "driver_opts" => ld.error(&p, key.loc, "`driver_opts` of a volume is not supported: use a bind mount (`./dir:/target`) for a host directory".into()),
            "external" => {
                let external = match &value.kind {
                    // the legacy `external: { name: x }`
                    Kind::Map(_) => Some(true),
                    _ => ld.boolean(value, &p, "`external`"),
                };
                if get(node, "driver").is_some() {
                    ld.error(&p, key.loc, format!("conflicting parameters `external` and `driver` for the volume `{name}`"));
                } else if external != Some(false) {
                    ld.error(&p, key.loc, format!("the external volume `{name}` is not supported: rcompose makes and keeps the project's volumes itself"));
                }
            }
            "labels" => ld.warn(&p, key.loc, "volume `labels` are ignored".into()),
            "name" => ld.warn(&p, key.loc, format!("the volume's `name` is ignored: the volume is `{name}` of the project")),
            _ => {}
        }
    }
}

/// A top-level secret or config.
fn file_source(
    ld: &mut Loader<'_>,
    node: &Node,
    path: &str,
    kind: &str,
    name: &str,
    dir: &Path,
) -> Option<FileSourceSpec> {
    let what = format!("the {} `{name}`", &kind[..kind.len() - 1]);
    let list = ld.map(node, path, &what)?;
    ld.unknown_keys(
        node,
        path,
        &[
            "file",
            "environment",
            "content",
            "external",
            "name",
            "labels",
            "driver",
            "driver_opts",
            "template_driver",
        ],
        &format!("in {what}"),
    );
    let mut spec = FileSourceSpec::default();
    for (key, value) in list {
        let p = join(path, &key.name);
        match key.name.as_str() {
            "file" => spec.file = ld.text(value, &p, "`file`").map(|f| rebase(dir, &f)),
            "environment" => spec.environment = ld.text(value, &p, "`environment`"),
            "content" => spec.content = ld.text(value, &p, "`content`"),
            "external"
                if matches!(value.kind, Kind::Map(_))
                    || ld.boolean(value, &p, "`external`") == Some(true) =>
            {
                ld.error(&p, key.loc, format!("{what} is `external`: not supported (there is no swarm or secret store); use `file`, `environment` or `content`"));
                return None;
            }
            "name" | "labels" => {
                ld.warn(&p, key.loc, format!("`{}` of {what} is ignored", key.name))
            }
            "driver" | "driver_opts" | "template_driver" => {
                ld.error(
                    &p,
                    key.loc,
                    format!("`{}` of {what} is not supported", key.name),
                );
            }
            _ => {}
        }
    }
    Some(spec)
}

#[cfg(test)]
mod tests;
