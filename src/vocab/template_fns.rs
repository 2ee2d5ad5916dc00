//! The globals and filters transformers gives chat templates, reimplemented for minijinja:
//! `raise_exception`, `strftime_now`, a `tojson` that writes what Python's `json.dumps` writes,
//! and a formatter that prints `None`/`True`/`False` the Python way.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error as JinjaError, ErrorKind, Output, State, Value};

/// `raise_exception(msg)`: aborts rendering with `msg`, as templates use to reject a conversation.
pub(crate) fn raise_exception(msg: String) -> Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

/// Prints values as Jinja2 under Python does where minijinja differs (`None`, `True`, `False`).
pub(crate) fn python_formatter(
    out: &mut Output,
    state: &mut State,
    value: &Value,
) -> Result<(), JinjaError> {
    match value.kind() {
        ValueKind::None => out.write_str("None").map_err(JinjaError::from),
        ValueKind::Bool => out
            .write_str(if value.is_true() { "True" } else { "False" })
            .map_err(JinjaError::from),
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, so `{"a": 1, "b": [1, 2]}` with Python's spacing.
pub(crate) fn tojson(value: &Value, kwargs: Kwargs) -> Result<String, JinjaError> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_i64() {
            Some(n) => Some(" ".repeat(n.max(0) as usize)),
            None => Some(v.as_str().map(str::to_string).ok_or_else(|| {
                JinjaError::new(
                    ErrorKind::InvalidOperation,
                    "tojson indent must be a number or a string",
                )
            })?),
        },
    };
    let (item_sep, key_sep) = match separators.filter(|s| !s.is_none()) {
        Some(s) => {
            let parts: Vec<String> = s
                .try_iter()?
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    JinjaError::new(
                        ErrorKind::InvalidOperation,
                        "tojson separators must be strings",
                    )
                })?;
            match parts.as_slice() {
                [a, b] => (a.clone(), b.clone()),
                _ => {
                    return Err(JinjaError::new(
                        ErrorKind::InvalidOperation,
                        "tojson separators must be a pair",
                    ))
                }
            }
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let json = serde_json::to_value(value)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let opts = JsonStyle {
        indent,
        item_sep,
        key_sep,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    opts.write(&json, 0, &mut out);
    Ok(out)
}

/// Python `json.dumps` formatting options.
struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

impl JsonStyle {
    fn newline(&self, depth: usize, out: &mut String) {
        if let Some(ind) = &self.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(ind);
            }
        }
    }

    fn write(&self, v: &serde_json::Value, depth: usize, out: &mut String) {
        use serde_json::Value as J;
        match v {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Number(n) => {
                if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                    // Python writes floats with a decimal point (1.0), Rust's Display would not.
                    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
                        out.push_str(&format!("{f:.1}"));
                    } else {
                        out.push_str(&format!("{f}"));
                    }
                } else {
                    out.push_str(&n.to_string());
                }
            }
            J::String(s) => self.string(s, out),
            J::Array(a) => {
                if a.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(depth + 1, out);
                    self.write(x, depth + 1, out);
                }
                self.newline(depth, out);
                out.push(']');
            }
            J::Object(o) => {
                if o.is_empty() {
                    out.push_str("{}");
                    return;
                }
                let mut items: Vec<(&String, &serde_json::Value)> = o.iter().collect();
                if self.sort_keys {
                    items.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (k, x)) in items.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(depth + 1, out);
                    self.string(k, out);
                    out.push_str(&self.key_sep);
                    self.write(x, depth + 1, out);
                }
                self.newline(depth, out);
                out.push('}');
            }
        }
    }

    fn string(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c if self.ensure_ascii && (c as u32) > 0x7e => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// `strftime_now(fmt)`: the current time (UTC; the library has no time-zone database) formatted
/// with the common C `strftime` codes.
pub(crate) fn strftime_now(fmt: String) -> Result<String, JinjaError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(&fmt, secs)
}

/// Formats Unix time `secs` (UTC) with `strftime` codes.
pub(crate) fn strftime(fmt: &str, secs: i64) -> Result<String, JinjaError> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let (y, m, d) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let wd = (days + 3).rem_euclid(7) as usize;
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // `%-d` (glibc): no zero padding.
        let mut pad = true;
        let mut code = chars.next();
        if code == Some('-') {
            pad = false;
            code = chars.next();
        }
        let num = |v: i64, w: usize| {
            if pad {
                format!("{v:0w$}")
            } else {
                v.to_string()
            }
        };
        let piece = match code {
            Some('Y') => y.to_string(),
            Some('y') => num(y.rem_euclid(100), 2),
            Some('m') => num(m, 2),
            Some('d') => num(d, 2),
            Some('e') => format!("{d:2}"),
            Some('H') => num(h, 2),
            Some('I') => num(if h % 12 == 0 { 12 } else { h % 12 }, 2),
            Some('M') => num(mi, 2),
            Some('S') => num(s, 2),
            Some('p') => (if h < 12 { "AM" } else { "PM" }).to_string(),
            Some('j') => num(yday, 3),
            Some('B') => MONTHS[(m - 1) as usize].to_string(),
            Some('b') | Some('h') => MONTHS[(m - 1) as usize][..3].to_string(),
            Some('A') => DAYS[wd].to_string(),
            Some('a') => DAYS[wd][..3].to_string(),
            Some('u') => (wd + 1).to_string(),
            Some('w') => ((wd + 1) % 7).to_string(),
            Some('F') => format!("{y:04}-{m:02}-{d:02}"),
            Some('T') => format!("{h:02}:{mi:02}:{s:02}"),
            Some('Z') => "UTC".to_string(),
            Some('z') => "+0000".to_string(),
            Some('%') => "%".to_string(),
            other => {
                return Err(JinjaError::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported format code %{}",
                        other.map(String::from).unwrap_or_default()
                    ),
                ))
            }
        };
        out.push_str(&piece);
    }
    Ok(out)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`, eras of 400 years).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_matches_python_for_known_instants() {
        // Values from Python: datetime.fromtimestamp(t, timezone.utc).strftime(fmt).
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S", 0).unwrap(),
            "1970-01-01 00:00:00"
        );
        assert_eq!(strftime("%d %b %Y", 1_732_406_400).unwrap(), "24 Nov 2024");
        assert_eq!(
            strftime("%A %B %-d, %j", 951_782_400).unwrap(),
            "Tuesday February 29, 060"
        );
        assert_eq!(strftime("%I %p", 1_700_000_000).unwrap(), "10 PM");
        assert!(strftime("%Q", 0).is_err());
    }
}
