//! Manifest problems and their rustc-style rendering.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Where a problem is in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLocation {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// Length of the offending token in characters (at least 1).
    pub len: u32,
    /// The text of the source line (for the snippet).
    pub line_text: String,
}

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the offending node, like `pods.web.depends_on.db` (empty for the root
    /// or for syntax errors).
    pub path: String,
    /// The message: lower case, identifiers in backticks, no trailing period.
    pub message: String,
    /// Where it is, when known.
    pub location: Option<SourceLocation>,
    /// The file it is in when that is not the manifest itself (a file a Compose file
    /// includes or extends).
    pub file: Option<PathBuf>,
}

/// Everything wrong with a manifest, all problems at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid manifest `{}`: {}", origin.display(), summary(problems))]
pub struct ManifestError {
    origin: PathBuf,
    problems: Vec<Problem>,
    /// The manifest is a Compose file (for the hint the CLI prints).
    compose: bool,
}

fn summary(problems: &[Problem]) -> String {
    match problems {
        [one] => one.message.clone(),
        many => format!("{} problems", many.len()),
    }
}

impl ManifestError {
    /// Builds an error; problems are sorted by file (the manifest's first, then the others
    /// by name) and position in it (those without one last).
    pub(crate) fn new(origin: PathBuf, mut problems: Vec<Problem>) -> Self {
        problems.sort_by(|a, b| {
            let key = |p: &Problem| {
                p.location
                    .as_ref()
                    .map_or((u32::MAX, u32::MAX), |l| (l.line, l.column))
            };
            a.file.cmp(&b.file).then(key(a).cmp(&key(b)))
        });
        problems.dedup();
        Self {
            origin,
            problems,
            compose: false,
        }
    }

    /// Marks the error as one of a Compose file.
    #[must_use]
    pub(crate) fn of_compose(mut self) -> Self {
        self.compose = true;
        self
    }

    /// Whether the manifest was a Compose file.
    pub fn is_compose(&self) -> bool {
        self.compose
    }

    /// The problems, in source order.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The manifest's path as the caller gave it.
    pub fn origin(&self) -> &std::path::Path {
        &self.origin
    }

    /// Renders every problem like rustc: `error: ...`, `--> file:line:col`, the source line and
    /// a caret underline; problems separated by a blank line. No trailing newline.
    pub fn render(&self) -> String {
        let origin = self.origin.display().to_string();
        self.problems
            .iter()
            .map(|p| match &p.file {
                Some(file) => render_problem(&file.display().to_string(), p),
                None => render_problem(&origin, p),
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}

/// Renders warnings like [`ManifestError::render`] renders errors (`warning: ...`, its place
/// and snippet); `origin` names the manifest. No trailing newline.
pub fn render_warnings(origin: &std::path::Path, warnings: &[Problem]) -> String {
    let origin = origin.display().to_string();
    warnings
        .iter()
        .map(|p| {
            let file = p.file.as_ref().map(|f| f.display().to_string());
            render_as("warning", file.as_deref().unwrap_or(&origin), p)
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn render_problem(origin: &str, p: &Problem) -> String {
    render_as("error", origin, p)
}

fn render_as(level: &str, origin: &str, p: &Problem) -> String {
    let mut out = format!("{level}: {}\n", p.message);
    match &p.location {
        None => {
            let _ = write!(out, "  --> {origin}");
        }
        Some(l) => {
            let number = l.line.to_string();
            let pad = " ".repeat(number.len() + 1);
            let caret_pad = " ".repeat(l.column.saturating_sub(1) as usize);
            let carets = "^".repeat(l.len.max(1) as usize);
            let _ = write!(
                out,
                "{pad}--> {origin}:{}:{}\n{pad} |\n {number} | {}\n{pad} | {caret_pad}{carets}",
                l.line,
                l.column,
                l.line_text.trim_end()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{ManifestError, Problem, SourceLocation};

    #[test]
    fn renders_problem_like_rustc() {
        let err = ManifestError::new(
            "examples/x/rcompose.yaml".into(),
            vec![Problem {
                path: "pods.web.replcas".into(),
                message: "unknown field `replcas` in pod `web`; did you mean `replicas`?".into(),
                location: Some(SourceLocation {
                    line: 4,
                    column: 5,
                    len: 7,
                    line_text: "    replcas: 3".into(),
                }),
                file: None,
            }],
        );
        assert_eq!(
            err.render(),
            "error: unknown field `replcas` in pod `web`; did you mean `replicas`?
  --> examples/x/rcompose.yaml:4:5
   |
 4 |     replcas: 3
   |     ^^^^^^^"
        );
    }
}
