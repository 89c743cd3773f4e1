//! Which changed paths a watch rule ignores: .gitignore rules (the `ignore` crate's matcher:
//! negation with `!`, anchored `/pattern`, directory-only `dir/`, `**`), in this order, the
//! last match winning as in git: editor and tool temporary files ([`DEFAULT_IGNORES`]), the
//! project's `.gitignore`, then the rule's own patterns (which may re-include with `!`).
//! Directories rcompose itself writes (its state and store) are always ignored, whatever
//! the patterns say: a change there must never trigger a watch (no feedback loops).
//!
//! Pure: the caller reads `.gitignore` and passes its text.

use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::WatchError;

/// Ignored by default: swap and backup files of vim (`*.swp`, `*.swo`, `*.swx`, `*~`, and
/// `4913`, the file vim writes to test a directory), emacs (`.#*` lock links, `#*#` autosaves),
/// JetBrains IDEs (`*___jb_tmp___`, `*___jb_old___`), `.DS_Store`, and version control
/// directories.
pub const DEFAULT_IGNORES: [&str; 13] = [
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    "4913",
    ".#*",
    "\\#*#",
    "*___jb_tmp___",
    "*___jb_old___",
    ".DS_Store",
    ".git/",
    ".hg/",
    ".svn/",
];

/// The ignore rules of one watch rule.
#[derive(Debug)]
pub struct IgnoreRules {
    root: PathBuf,
    matcher: Gitignore,
    /// Matches file names of paths outside `root` (only the patterns without a `/`).
    names: Gitignore,
    excluded: Vec<PathBuf>,
}

impl IgnoreRules {
    /// Rules rooted at `root` (the manifest's directory, an absolute path): the defaults,
    /// then the lines of `gitignore` (the project's `.gitignore`, if it has one), then
    /// `patterns`; paths under `excluded` (absolute) are always ignored.
    ///
    /// # Errors
    /// [`WatchError::Pattern`] for a pattern that is not a valid glob.
    pub fn new(
        root: &Path,
        gitignore: Option<&str>,
        patterns: &[String],
        excluded: Vec<PathBuf>,
    ) -> Result<Self, WatchError> {
        let mut builder = GitignoreBuilder::new(root);
        let mut names = GitignoreBuilder::new("/");
        let mut add = |line: &str, origin: &str| -> Result<(), WatchError> {
            let bad = |e: ignore::Error| WatchError::Pattern {
                pattern: line.to_string(),
                origin: origin.to_string(),
                reason: e.to_string(),
            };
            builder.add_line(None, line).map_err(bad)?;
            let body = line.trim_start_matches('!').trim_end_matches('/');
            if !body.contains('/') {
                names.add_line(None, line).map_err(bad)?;
            }
            Ok(())
        };
        for line in DEFAULT_IGNORES {
            add(line, "the default ignores")?;
        }
        for line in gitignore.unwrap_or_default().lines() {
            add(line, "`.gitignore`")?;
        }
        for line in patterns {
            add(line, "`ignore`")?;
        }
        let built = |b: &GitignoreBuilder| {
            b.build().map_err(|e| WatchError::Pattern {
                pattern: String::new(),
                origin: "`ignore`".into(),
                reason: e.to_string(),
            })
        };
        Ok(IgnoreRules {
            root: root.to_path_buf(),
            matcher: built(&builder)?,
            names: built(&names)?,
            excluded,
        })
    }

    /// Whether a change of `path` (absolute) is ignored; `is_dir` says whether it is (or
    /// was) a directory.
    #[must_use]
    pub fn is_ignored(&self, path: &Path, is_dir: bool) -> bool {
        if self.excluded.iter().any(|e| path.starts_with(e)) {
            return true;
        }
        if path.starts_with(&self.root) && path != self.root {
            return self
                .matcher
                .matched_path_or_any_parents(path, is_dir)
                .is_ignore();
        }
        // outside the project's directory: match each component's name
        let mut dir = is_dir;
        let mut current = Some(path);
        while let Some(p) = current {
            if let Some(name) = p.file_name() {
                match self.names.matched(Path::new(name), dir) {
                    m if m.is_ignore() => return true,
                    m if m.is_whitelist() => return false,
                    _ => {}
                }
            }
            dir = true;
            current = p.parent();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(gitignore: Option<&str>, patterns: &[&str]) -> IgnoreRules {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_string()).collect();
        IgnoreRules::new(
            Path::new("/p"),
            gitignore,
            &patterns,
            vec![PathBuf::from("/p/.store"), PathBuf::from("/run/rcompose")],
        )
        .expect("valid patterns")
    }

    fn ignored(r: &IgnoreRules, path: &str) -> bool {
        r.is_ignored(Path::new(path), false)
    }

    #[test]
    fn editor_temporary_files_are_ignored_by_default() {
        let r = rules(None, &[]);
        for path in [
            "/p/site/index.html.swp",
            "/p/site/.index.html.swx",
            "/p/site/index.html~",
            "/p/site/4913",
            "/p/site/.#index.html",
            "/p/site/#index.html#",
            "/p/site/index.html___jb_tmp___",
            "/p/.git/index",
            "/p/site/.git/objects/ab/cd",
        ] {
            assert!(ignored(&r, path), "{path} should be ignored");
        }
        for path in [
            "/p/site/index.html",
            "/p/site/4914",
            "/p/swp",
            "/p/site/a.swpx",
        ] {
            assert!(!ignored(&r, path), "{path} should not be ignored");
        }
    }

    #[test]
    fn the_projects_gitignore_applies_with_its_anchors_and_directory_rules() {
        let r = rules(
            Some("# comment\n/build\nnode_modules/\n*.log\n!keep.log\n"),
            &[],
        );
        assert!(ignored(&r, "/p/build/out.o"));
        assert!(
            !ignored(&r, "/p/site/build/page.html"),
            "`/build` is anchored"
        );
        assert!(ignored(&r, "/p/site/node_modules/x/index.js"));
        assert!(r.is_ignored(Path::new("/p/site/node_modules"), true));
        assert!(ignored(&r, "/p/site/debug.log"));
        assert!(!ignored(&r, "/p/site/keep.log"), "`!` re-includes");
    }

    #[test]
    fn the_rules_patterns_come_last_and_may_re_include() {
        let r = rules(Some("*.tmp\n"), &["*.css", "!important.tmp", "!*.swp"]);
        assert!(ignored(&r, "/p/site/a.css"));
        assert!(ignored(&r, "/p/site/a.tmp"));
        assert!(!ignored(&r, "/p/site/important.tmp"));
        assert!(
            !ignored(&r, "/p/site/a.swp"),
            "a rule may re-include a default"
        );
        assert!(!ignored(&r, "/p/site/a.html"));
    }

    #[test]
    fn rcomposes_own_directories_are_always_ignored() {
        let r = rules(None, &["!*"]);
        assert!(ignored(&r, "/p/.store/snapshots/x/file"));
        assert!(ignored(&r, "/run/rcompose/demo/state.json"));
        assert!(!ignored(&r, "/p/.storefront/file"));
    }

    #[test]
    fn paths_outside_the_project_match_by_name() {
        let r = rules(None, &["*.css", "/anchored"]);
        assert!(ignored(&r, "/elsewhere/site/a.css"));
        assert!(ignored(&r, "/elsewhere/site/.a.html.swp"));
        assert!(ignored(&r, "/elsewhere/.git/HEAD"));
        assert!(!ignored(&r, "/elsewhere/site/a.html"));
        assert!(
            !ignored(&r, "/anchored"),
            "anchored patterns apply under the project only"
        );
    }

    #[test]
    fn an_invalid_pattern_is_reported_with_its_origin() {
        let err = IgnoreRules::new(Path::new("/p"), None, &["{a,b".to_string()], Vec::new())
            .expect_err("unclosed alternation");
        match err {
            WatchError::Pattern {
                pattern, origin, ..
            } => {
                assert_eq!(pattern, "{a,b");
                assert_eq!(origin, "`ignore`");
            }
            other => panic!("unexpected error: {other:?}"),
        }
    }
}
