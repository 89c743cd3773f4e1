//! Resource quantities: CPU in thousandths of a CPU and memory in bytes. Parse + Display
//! round-trip (`Display` output parses back to the same value).

use std::fmt;

/// A CPU limit in thousandths of a CPU: `500m`, `0.5`, `1`, `2.5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MilliCpu(pub u64);

/// A memory size in bytes: `128Mi`, `1G`, `512k`, `1Gi`, `1048576`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

/// Splits `"12.5"` into (`12`, `5`, 1 fraction digit); only ASCII digits, at most one dot.
fn decimal(text: &str) -> Option<(u128, u128, u32)> {
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || !all_digits(frac) || frac.len() > 18 || int.len() > 20 {
        return None;
    }
    let int_value = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_value = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    Some((int_value, frac_value, u32::try_from(frac.len()).ok()?))
}

/// `int.frac * unit` as a whole number, or `None` if it is not whole or overflows u64.
fn scaled(int: u128, frac: u128, digits: u32, unit: u128) -> Option<u64> {
    let whole = int.checked_mul(unit)?;
    let scale = 10u128.checked_pow(digits)?;
    let part = frac.checked_mul(unit)?;
    if part % scale != 0 {
        return None;
    }
    u64::try_from(whole.checked_add(part / scale)?).ok()
}

impl MilliCpu {
    /// Parses `500m`, `0.5`, `1`, `2.5`; must be at least `1m`.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_inner(text, false)
    }

    /// [`Self::parse`], also accepting zero (`0`, `0m`): a request, which may be nothing.
    pub fn parse_request(text: &str) -> Result<Self, String> {
        Self::parse_inner(text, true)
    }

    fn parse_inner(text: &str, zero: bool) -> Result<Self, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "invalid cpu quantity `{text}`: expected cpus like `0.5`, `2` or millicpus like `500m`"
            )
        };
        let (number, unit) = match text.strip_suffix('m') {
            Some(n) => (n, 1),
            None => (text, 1000),
        };
        let (int, frac, digits) = decimal(number).ok_or_else(bad)?;
        let value = scaled(int, frac, digits, unit).ok_or_else(|| {
            format!("invalid cpu quantity `{text}`: the smallest unit is `1m` (0.001 cpu)")
        })?;
        if value == 0 && !zero {
            return Err(format!(
                "invalid cpu quantity `{text}`: must be greater than zero"
            ));
        }
        Ok(Self(value))
    }
}

impl fmt::Display for MilliCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

const UNITS: [(&str, u128); 9] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("k", 1_000),
    ("K", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
];

impl Bytes {
    /// Parses `128Mi`, `1G`, `512k`, `1.5Gi` or a plain number of bytes; must be positive.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_inner(text, false)
    }

    /// [`Self::parse`], also accepting zero: a request, which may be nothing.
    pub fn parse_request(text: &str) -> Result<Self, String> {
        Self::parse_inner(text, true)
    }

    fn parse_inner(text: &str, zero: bool) -> Result<Self, String> {
        let text = text.trim();
        let number_end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(number_end);
        let unit = if suffix.is_empty() {
            Some(1)
        } else {
            UNITS.iter().find(|(s, _)| *s == suffix).map(|(_, u)| *u)
        };
        let Some(unit) = unit else {
            let hint = match suffix.to_ascii_lowercase().trim_end_matches('b') {
                "m" | "mi" => {
                    format!("; write `{number}Mi` (mebibytes) or `{number}M` (megabytes)")
                }
                "g" | "gi" => {
                    format!("; write `{number}Gi` (gibibytes) or `{number}G` (gigabytes)")
                }
                "k" | "ki" => {
                    format!("; write `{number}Ki` (kibibytes) or `{number}k` (kilobytes)")
                }
                "t" | "ti" => {
                    format!("; write `{number}Ti` (tebibytes) or `{number}T` (terabytes)")
                }
                _ => String::new(),
            };
            return Err(format!(
                "invalid memory quantity `{text}`: unknown unit `{suffix}` (use k, K, M, G, T, Ki, Mi, Gi or Ti){hint}"
            ));
        };
        let (int, frac, digits) = decimal(number).ok_or_else(|| {
            format!("invalid memory quantity `{text}`: expected a number with an optional unit, like `128Mi` or `1G`")
        })?;
        let value = scaled(int, frac, digits, unit).ok_or_else(|| {
            format!("invalid memory quantity `{text}`: not a whole number of bytes, or too large")
        })?;
        if value == 0 && !zero {
            return Err(format!(
                "invalid memory quantity `{text}`: must be greater than zero"
            ));
        }
        Ok(Self(value))
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = u128::from(self.0);
        // Binary units first (the usual way to write limits), then decimal ones.
        let order = [3usize, 2, 1, 0, 8, 7, 6, 4];
        for index in order {
            let (suffix, unit) = UNITS[index];
            if value >= unit && value % unit == 0 {
                return write!(f, "{}{suffix}", value / unit);
            }
        }
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{Bytes, MilliCpu};

    #[test]
    fn cpu_quantities_parse_to_millicpu() {
        for (text, millis) in [
            ("500m", 500),
            ("0.5", 500),
            ("1", 1000),
            ("2.5", 2500),
            (".25", 250),
        ] {
            assert_eq!(MilliCpu::parse(text), Ok(MilliCpu(millis)), "{text}");
        }
    }

    #[test]
    fn cpu_quantities_round_trip_through_display() {
        for millis in [1, 250, 500, 1000, 1500, 64_000] {
            let shown = MilliCpu(millis).to_string();
            assert_eq!(MilliCpu::parse(&shown), Ok(MilliCpu(millis)), "{shown}");
        }
        assert_eq!(MilliCpu(2000).to_string(), "2");
        assert_eq!(MilliCpu(500).to_string(), "500m");
    }

    #[test]
    fn rejects_bad_cpu_quantities() {
        assert_eq!(
            MilliCpu::parse("0.0005"),
            Err("invalid cpu quantity `0.0005`: the smallest unit is `1m` (0.001 cpu)".into())
        );
        assert_eq!(
            MilliCpu::parse("lots"),
            Err("invalid cpu quantity `lots`: expected cpus like `0.5`, `2` or millicpus like `500m`".into())
        );
        assert!(MilliCpu::parse("0").is_err());
        assert!(MilliCpu::parse("-1").is_err());
        assert!(MilliCpu::parse("1.2.3").is_err());
    }

    #[test]
    fn memory_quantities_parse_to_bytes() {
        for (text, bytes) in [
            ("128Mi", 128 << 20),
            ("1G", 1_000_000_000),
            ("512k", 512_000),
            ("512K", 512_000),
            ("1Gi", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("1048576", 1 << 20),
            ("2Ti", 2 << 40),
        ] {
            assert_eq!(Bytes::parse(text), Ok(Bytes(bytes)), "{text}");
        }
    }

    #[test]
    fn memory_quantities_round_trip_through_display() {
        for bytes in [
            1,
            1000,
            1024,
            1536,
            128 << 20,
            1_000_000_000,
            3 << 29,
            123_456_789,
        ] {
            let shown = Bytes(bytes).to_string();
            assert_eq!(Bytes::parse(&shown), Ok(Bytes(bytes)), "{shown}");
        }
        assert_eq!(Bytes(128 << 20).to_string(), "128Mi");
        assert_eq!(Bytes(1_000_000_000).to_string(), "1G");
        assert_eq!(Bytes(1536).to_string(), "1536");
    }

    #[test]
    fn rejects_docker_style_lowercase_megabytes_with_hint() {
        assert_eq!(
            Bytes::parse("512m"),
            Err("invalid memory quantity `512m`: unknown unit `m` (use k, K, M, G, T, Ki, Mi, Gi or Ti); write `512Mi` (mebibytes) or `512M` (megabytes)".into())
        );
        assert!(Bytes::parse("0").is_err());
        assert!(Bytes::parse("1.5").is_err());
        assert!(Bytes::parse("Mi").is_err());
        assert!(Bytes::parse("99999999999Ti").is_err());
    }
}

/// A Compose duration: numbers with units `h`, `m`, `s`, `ms`, `us` (`1m30s`, `500ms`, `10s`).
///
/// # Errors
///
/// A message naming the text and the syntax.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || {
        format!(
            "invalid duration `{text}`: write a number with a unit, like `10s`, `1m30s` or `500ms`"
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = std::time::Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            _ => return Err(bad()),
        };
        total += std::time::Duration::try_from_secs_f64(value * seconds).map_err(|_| bad())?;
        rest = next;
    }
    Ok(total)
}

/// The signal number of a name (`SIGINT`, `INT`, case-insensitive) or number (`2`).
///
/// # Errors
///
/// A message naming the text.
pub fn parse_signal(text: &str) -> Result<(String, i32), String> {
    const SIGNALS: [(&str, i32); 22] = [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ILL", 4),
        ("TRAP", 5),
        ("ABRT", 6),
        ("BUS", 7),
        ("FPE", 8),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("CHLD", 17),
        ("CONT", 18),
        ("STOP", 19),
        ("TSTP", 20),
        ("TTIN", 21),
        ("TTOU", 22),
        ("WINCH", 28),
    ];
    let upper = text.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let found = match bare.parse::<i32>() {
        Ok(n) => SIGNALS.iter().find(|(_, v)| *v == n),
        Err(_) => SIGNALS.iter().find(|(name, _)| *name == bare),
    };
    match found {
        Some((name, n)) => Ok((format!("SIG{name}"), *n)),
        None => Err(format!(
            "unknown signal `{text}`: use a name like `SIGINT` or `SIGQUIT`"
        )),
    }
}

#[cfg(test)]
mod stop_tests {
    use super::{parse_duration, parse_signal};
    use std::time::Duration;

    #[test]
    fn durations_as_compose_writes_them() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "10", "s", "10x", "-1s", "1m30"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("SIGINT"), Ok(("SIGINT".into(), 2)));
        assert_eq!(parse_signal("quit"), Ok(("SIGQUIT".into(), 3)));
        assert_eq!(parse_signal("15"), Ok(("SIGTERM".into(), 15)));
        assert!(parse_signal("SIGFOO").is_err());
        assert!(parse_signal("99").is_err());
    }
}
