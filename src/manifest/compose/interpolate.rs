//! Compose's variable interpolation (`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}`, `$$`) and `.env` files.
//! Pure: variables come from a lookup function the caller gives.

/// What interpolating one string gave.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Outcome {
    /// The text with every reference replaced.
    pub(crate) text: String,
    /// Variables that were referenced without a default and are unset (they became empty).
    pub(crate) unset: Vec<String>,
}

/// Replaces the variable references of `text`. `Err` is the message of a `${VAR:?err}` whose
/// variable is unset (or empty), or of a malformed reference.
pub(crate) fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.text.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.text.push('$');
                i += 2;
            }
            Some('{') => {
                // find the matching brace (defaults may hold nested `${...}`)
                let start = i + 2;
                let mut depth = 1;
                let mut j = start;
                while j < chars.len() {
                    match chars[j] {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(format!(
                        "invalid interpolation format for `{text}`: `${{` without a closing `}}`"
                    ));
                }
                let inner: String = chars[start..j].iter().collect();
                let value = braced(&inner, text, lookup, &mut out.unset)?;
                out.text.push_str(&value);
                i = j + 1;
            }
            Some(n) if n.is_ascii_alphabetic() || *n == '_' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                match lookup(&name) {
                    Some(v) => out.text.push_str(&v),
                    None => out.unset.push(name),
                }
                i = j;
            }
            _ => {
                // a lone `$` stays (Compose keeps `$` before anything that is not a name)
                out.text.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The value of `${inner}`.
fn braced(
    inner: &str,
    whole: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    let end = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let (name, rest) = inner.split_at(end);
    if !valid_name(name) {
        return Err(format!(
            "invalid interpolation format for `{whole}`: `${{{inner}}}` does not start with a variable name"
        ));
    }
    let value = lookup(name);
    let (colon, rest) = match rest.strip_prefix(':') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    // with `:` an empty value counts as unset
    let present = |v: &Option<String>| v.as_ref().is_some_and(|v| !colon || !v.is_empty());
    // the word after the operator is interpolated itself (only when used)
    let word = |w: &str, unset: &mut Vec<String>| -> Result<String, String> {
        let o = interpolate(w, lookup)?;
        unset.extend(o.unset);
        Ok(o.text)
    };
    match rest.chars().next() {
        None if !colon => Ok(value.unwrap_or_else(|| {
            unset.push(name.to_string());
            String::new()
        })),
        Some('-') => {
            if present(&value) {
                Ok(value.unwrap_or_default())
            } else {
                word(&rest[1..], unset)
            }
        }
        Some('?') => {
            if present(&value) {
                Ok(value.unwrap_or_default())
            } else {
                let message = word(&rest[1..], unset)?;
                let message = if message.is_empty() {
                    format!("required variable `{name}` is missing a value")
                } else {
                    format!("required variable `{name}` is missing a value: {message}")
                };
                Err(message)
            }
        }
        Some('+') => {
            if present(&value) {
                word(&rest[1..], unset)
            } else {
                Ok(String::new())
            }
        }
        _ => Err(format!(
            "invalid interpolation format for `{whole}`: `${{{inner}}}`; expected `${{VAR}}`, `${{VAR:-default}}`, `${{VAR:?error}}` or `${{VAR:+alternative}}`"
        )),
    }
}

/// One `KEY=VALUE` line of an env file, or a problem with its 1-based line number.
pub(crate) type EnvEntry = (String, Option<String>);

/// Parses a `.env` / `env_file` text (docker's and Compose's format): `KEY=VALUE` lines,
/// `export ` prefixes, `#` comments, single quotes (literal), double quotes (`\n`, `\"`
/// escapes, interpolated) and unquoted values (interpolated, a ` #` starts a comment). A
/// line with a key alone (`KEY`) takes the value from `lookup`. Values refer to earlier keys of
/// the file or to `lookup`.
pub(crate) fn parse_env_file(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<EnvEntry>, (usize, String)> {
    let mut out: Vec<EnvEntry> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v)),
            None => (line, None),
        };
        if !valid_name(key)
            && !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            || key.is_empty()
        {
            return Err((n + 1, format!("invalid variable name `{key}`")));
        }
        let Some(value) = value else {
            out.push((key.to_string(), lookup(key)));
            continue;
        };
        let known = |name: &str| {
            out.iter()
                .rev()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.clone())
                .or_else(|| lookup(name))
        };
        let value = value.trim_start();
        let value = if let Some(rest) = value.strip_prefix('\'') {
            match rest.find('\'') {
                Some(end) => rest[..end].to_string(),
                None => return Err((n + 1, format!("unterminated quote in the value of `{key}`"))),
            }
        } else if let Some(rest) = value.strip_prefix('"') {
            let mut s = String::new();
            let mut chars = rest.chars();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some('r') => s.push('\r'),
                        Some(o) => s.push(o),
                        None => s.push('\\'),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    _ => s.push(c),
                }
            }
            if !closed {
                return Err((n + 1, format!("unterminated quote in the value of `{key}`")));
            }
            interpolate(&s, &known).map_err(|e| (n + 1, e))?.text
        } else {
            let v = match value.find(" #") {
                Some(at) => &value[..at],
                None => value,
            };
            interpolate(v.trim_end(), &known)
                .map_err(|e| (n + 1, e))?
                .text
        };
        out.push((key.to_string(), Some(value)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{interpolate, parse_env_file};

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("8080".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, String> {
        interpolate(text, &env).map(|o| o.text)
    }

    #[test]
    fn plain_and_braced_references_are_replaced() {
        assert_eq!(run("a $SET b ${SET} c").unwrap(), "a value b value c");
        assert_eq!(run("${PORT}:80").unwrap(), "8080:80");
        assert_eq!(run("$SET.x").unwrap(), "value.x");
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        assert_eq!(run("echo $$HOME $${SET}").unwrap(), "echo $HOME ${SET}");
    }

    #[test]
    fn defaults_distinguish_unset_from_empty() {
        assert_eq!(run("${UNSET:-d}").unwrap(), "d");
        assert_eq!(run("${EMPTY:-d}").unwrap(), "d");
        assert_eq!(run("${UNSET-d}").unwrap(), "d");
        assert_eq!(run("${EMPTY-d}").unwrap(), "");
        assert_eq!(run("${SET:-d}").unwrap(), "value");
        assert_eq!(run("${UNSET:-${PORT}}").unwrap(), "8080");
    }

    #[test]
    fn alternatives_apply_only_when_set() {
        assert_eq!(run("${SET:+alt}").unwrap(), "alt");
        assert_eq!(run("${EMPTY:+alt}").unwrap(), "");
        assert_eq!(run("${EMPTY+alt}").unwrap(), "alt");
        assert_eq!(run("${UNSET+alt}").unwrap(), "");
    }

    #[test]
    fn required_variables_fail_with_their_message() {
        assert_eq!(
            run("${UNSET:?set it please}"),
            Err("required variable `UNSET` is missing a value: set it please".into())
        );
        assert_eq!(
            run("${EMPTY:?}"),
            Err("required variable `EMPTY` is missing a value".into())
        );
        assert_eq!(run("${EMPTY?x}").unwrap(), "");
        assert!(run("${UNSET?x}").is_err());
    }

    #[test]
    fn unset_variables_become_empty_and_are_listed() {
        let o = interpolate("a${UNSET}b$OTHER", &env).unwrap();
        assert_eq!(o.text, "ab");
        assert_eq!(o.unset, vec!["UNSET".to_string(), "OTHER".to_string()]);
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(run("${SET").unwrap_err().contains("without a closing"));
        assert!(
            run("${1A}")
                .unwrap_err()
                .contains("does not start with a variable name")
        );
        assert!(run("${SET:x}").unwrap_err().contains("expected `${VAR}`"));
        assert_eq!(run("cost: 5$").unwrap(), "cost: 5$");
    }

    #[test]
    fn env_files_follow_compose_quoting() {
        let text = "# comment\nA=1\nexport B = two words # note\nC='$A literal'\nD=\"x\\ny $A\"\nE=${A}-${SET}\nSET\nUNSET\n";
        let got = parse_env_file(text, &env).unwrap();
        let pairs: Vec<(&str, Option<&str>)> = got
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("A", Some("1")),
                ("B", Some("two words")),
                ("C", Some("$A literal")),
                ("D", Some("x\ny 1")),
                ("E", Some("1-value")),
                ("SET", Some("value")),
                ("UNSET", None),
            ]
        );
        assert_eq!(
            parse_env_file("A=1\nB='open\n", &env),
            Err((2, "unterminated quote in the value of `B`".into()))
        );
    }
}
