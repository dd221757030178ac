//! A small command-line parser: `--name value` pairs and `--flag`s.
//!
//! The binaries take a handful of options each; a parser crate would cost
//! more build time than the whole benchmark's own code.

use std::collections::HashMap;
use std::str::FromStr;

/// Parsed `--name value` options and `--flag`s, plus positional words.
#[derive(Debug, Default)]
pub struct Args {
    values: HashMap<String, String>,
    flags: Vec<String>,
    positional: Vec<String>,
}

impl Args {
    /// Parses `args` (without the program name). Every `--name` followed by a
    /// word that does not start with `--` takes it as its value; a `--name`
    /// in `flags` never takes a value.
    pub fn parse(args: impl IntoIterator<Item = String>, flags: &[&str]) -> Args {
        let mut out = Args::default();
        let mut it = args.into_iter().peekable();
        while let Some(arg) = it.next() {
            if let Some(name) = arg.strip_prefix("--") {
                if let Some((n, v)) = name.split_once('=') {
                    out.values.insert(n.to_owned(), v.to_owned());
                } else if flags.contains(&name) {
                    out.flags.push(name.to_owned());
                } else {
                    match it.peek() {
                        Some(v) if !v.starts_with("--") => {
                            let v = it.next().unwrap_or_default();
                            out.values.insert(name.to_owned(), v);
                        }
                        _ => out.flags.push(name.to_owned()),
                    }
                }
            } else {
                out.positional.push(arg);
            }
        }
        out
    }

    /// Parses the process's arguments.
    pub fn from_env(flags: &[&str]) -> Args {
        Args::parse(std::env::args().skip(1), flags)
    }

    /// The value of `--name`, as text.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of `--name`, parsed; `default` when absent. Exits with a
    /// message when the value does not parse.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> T {
        match self.values.get(name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("--{name}: cannot parse {v:?}");
                std::process::exit(2)
            }),
        }
    }

    /// The value of `--name`, parsed, if given.
    pub fn opt<T: FromStr>(&self, name: &str) -> Option<T> {
        self.values.get(name).map(|v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("--{name}: cannot parse {v:?}");
                std::process::exit(2)
            })
        })
    }

    /// Whether `--name` was given as a flag.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    /// The words that are not options, in order.
    pub fn positional(&self) -> &[String] {
        &self.positional
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_flags_and_words() {
        let a = Args::parse(
            ["run", "--users", "10", "--check", "--mix=/read:9", "--x"].map(String::from),
            &["check"],
        );
        assert_eq!(a.get("users", 0u32), 10);
        assert!(a.flag("check"));
        assert!(a.flag("x"));
        assert_eq!(a.str("mix"), Some("/read:9"));
        assert_eq!(a.positional(), ["run"]);
    }
}
