//! A small command-line parser: `--name value`, `--name=value`, boolean `--flag`, repeated options,
//! positional arguments, and `--` to end options. Each command declares which names it accepts, so
//! a typo is a usage error instead of being silently ignored.

use std::collections::HashSet;
use std::str::FromStr;

use crate::CliError;

/// The option names one command accepts.
pub struct Spec {
    /// Options without a value (`--raw`).
    pub flags: &'static [&'static str],
    /// Options that take a value (`--model PATH`); may be given more than once.
    pub options: &'static [&'static str],
    /// More value-taking options, shared by several commands.
    pub shared: &'static [&'static str],
}

/// Parsed arguments of one command.
#[derive(Debug, Default)]
pub struct Parsed {
    flags: HashSet<String>,
    options: Vec<(String, String)>,
    /// Arguments that are not options, in order.
    pub positional: Vec<String>,
}

/// Parses `args` (the words after the command name) against `spec`.
pub fn parse(args: &[String], spec: &Spec) -> Result<Parsed, CliError> {
    let mut p = Parsed::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            p.positional.extend(it.by_ref().cloned());
            break;
        }
        let Some(body) = a.strip_prefix("--") else {
            p.positional.push(a.clone());
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        if spec.flags.contains(&name) {
            if inline.is_some() {
                return Err(CliError::Usage(format!("--{name} takes no value")));
            }
            p.flags.insert(name.to_string());
        } else if spec.options.contains(&name) || spec.shared.contains(&name) {
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| CliError::Usage(format!("--{name} needs a value")))?,
            };
            p.options.push((name.to_string(), value));
        } else {
            return Err(CliError::Usage(format!("unknown option --{name}")));
        }
    }
    Ok(p)
}

impl Parsed {
    /// Whether boolean option `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(name)
    }

    /// The last value of `--name`, if given.
    pub fn opt(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable `--name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.options
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of `--name`, which must be present.
    pub fn required(&self, name: &str) -> Result<&str, CliError> {
        self.opt(name)
            .ok_or_else(|| CliError::Usage(format!("--{name} is required")))
    }

    /// The value of `--name` parsed as `T`, if given.
    pub fn parsed<T: FromStr>(&self, name: &str) -> Result<Option<T>, CliError> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<T>()
                .map(Some)
                .map_err(|_| CliError::Usage(format!("--{name}: cannot parse {v:?}"))),
        }
    }

    /// The value of `--name` parsed as `T`, or `default`.
    pub fn parsed_or<T: FromStr>(&self, name: &str, default: T) -> Result<T, CliError> {
        Ok(self.parsed(name)?.unwrap_or(default))
    }
}

/// Parses token ids written as `1,2,3`, `1 2 3` or a mix, from one or more words.
pub fn parse_ids<S: AsRef<str>>(words: &[S]) -> Result<Vec<u32>, CliError> {
    let mut ids = Vec::new();
    for w in words {
        for part in w
            .as_ref()
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            let id = part
                .parse::<u32>()
                .map_err(|_| CliError::Usage(format!("not a token id: {part:?}")))?;
            ids.push(id);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: Spec = Spec {
        flags: &["raw"],
        options: &["stop"],
        shared: &["model"],
    };

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn parses_options_flags_and_positionals() {
        let p = parse(
            &words(&[
                "--model=m.gguf",
                "x",
                "--stop",
                "a",
                "--raw",
                "--stop",
                "b",
                "--",
                "--y",
            ]),
            &SPEC,
        )
        .unwrap();
        assert_eq!(p.opt("model"), Some("m.gguf"));
        assert_eq!(p.all("stop"), vec!["a", "b"]);
        assert!(p.flag("raw"));
        assert_eq!(p.positional, vec!["x", "--y"]);
    }

    #[test]
    fn rejects_unknown_and_missing_values() {
        assert!(matches!(
            parse(&words(&["--nope"]), &SPEC),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            parse(&words(&["--model"]), &SPEC),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            parse(&words(&["--raw=1"]), &SPEC),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn parses_id_lists() {
        assert_eq!(parse_ids(&["1,2", "3 4,"]).unwrap(), vec![1, 2, 3, 4]);
        assert!(parse_ids(&["1,x"]).is_err());
    }
}
