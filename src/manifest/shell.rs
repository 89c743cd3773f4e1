//! Splits a command string into words like a POSIX shell would, without expansions.

/// Splits `text` into words: whitespace separates, `'...'` is literal, `"..."` allows the
/// escapes `\"`, `\\`, `\$` and `` \` ``, and a backslash outside quotes escapes the next
/// character. No variable, glob or command expansion happens.
pub(crate) fn split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unclosed single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unclosed double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unclosed double quote".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err("trailing backslash".into()),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn shell_split_respects_quotes() {
        assert_eq!(
            split(r#"/bin/sh -c "echo 'hi there'" '$HOME' a\ b """#).unwrap(),
            ["/bin/sh", "-c", "echo 'hi there'", "$HOME", "a b", ""]
        );
        assert_eq!(split("  sleep   10 ").unwrap(), ["sleep", "10"]);
        assert_eq!(split(r#"echo "a\"b""#).unwrap(), ["echo", "a\"b"]);
    }

    #[test]
    fn shell_split_rejects_unclosed_quotes() {
        assert_eq!(split("echo 'oops"), Err("unclosed single quote".into()));
        assert_eq!(split("echo \"oops"), Err("unclosed double quote".into()));
        assert_eq!(split("echo \\"), Err("trailing backslash".into()));
    }
}
