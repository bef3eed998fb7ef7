//! Flag parsing by hand (no dependency): `--name value`, `--name=value` and switches,
//! `--help` printing the usage built from the same table the parser reads.

use std::collections::HashMap;
use std::str::FromStr;

/// One flag: its name without the dashes, the placeholder of its value (`None` for a
/// switch), the default shown in the usage ("" for none) and what it does.
#[derive(Clone, Copy)]
pub struct Flag {
    pub name: &'static str,
    pub value: Option<&'static str>,
    pub default: &'static str,
    pub help: &'static str,
}

/// The parsed command line: values by flag name, switches that were given.
pub struct Args {
    values: HashMap<&'static str, String>,
    switches: Vec<&'static str>,
}

/// What went wrong on the command line; `main` prints it with a pointer to `--help` and
/// exits with status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (run with --help for the flags)", self.0)
    }
}

impl std::error::Error for UsageError {}

/// The usage text: `about`, the command, then one line per flag.
pub fn usage(example: &str, about: &str, flags: &[Flag]) -> String {
    let mut s = format!("{about}\n\nusage: cargo run --release --example {example} -- [flags]\n\nflags:\n");
    let lhs = |f: &Flag| match f.value {
        Some(v) => format!("--{} {v}", f.name),
        None => format!("--{}", f.name),
    };
    let width = flags.iter().map(|f| lhs(f).len()).max().unwrap_or(0).max(6);
    for f in flags {
        let default = if f.default.is_empty() { String::new() } else { format!(" [default: {}]", f.default) };
        s += &format!("  {:width$}  {}{default}\n", lhs(f), f.help);
    }
    s += &format!("  {:width$}  print this help\n", "--help");
    s
}

impl Args {
    /// Parses `argv` (without the program name) against `flags`. `Ok(None)`: `--help` was
    /// given (the caller prints the usage and exits 0).
    pub fn parse(argv: impl IntoIterator<Item = String>, flags: &[Flag]) -> Result<Option<Args>, UsageError> {
        let mut args = Args { values: HashMap::new(), switches: Vec::new() };
        let mut it = argv.into_iter();
        while let Some(a) = it.next() {
            if a == "--help" || a == "-h" {
                return Ok(None);
            }
            let Some(body) = a.strip_prefix("--") else {
                return Err(UsageError(format!("unexpected argument `{a}`: flags start with --")));
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some(flag) = flags.iter().find(|f| f.name == name) else {
                return Err(UsageError(format!("unknown flag `--{name}`")));
            };
            match (flag.value, inline) {
                (None, None) => args.switches.push(flag.name),
                (None, Some(_)) => return Err(UsageError(format!("`--{name}` is a switch and takes no value"))),
                (Some(_), Some(v)) => {
                    args.values.insert(flag.name, v);
                }
                (Some(placeholder), None) => {
                    let v = it.next().ok_or_else(|| UsageError(format!("`--{name}` needs a value {placeholder}")))?;
                    args.values.insert(flag.name, v);
                }
            }
        }
        Ok(Some(args))
    }

    /// Whether switch `name` was given.
    pub fn switch(&self, name: &str) -> bool {
        self.switches.contains(&name)
    }

    /// The raw value of `name`, if given.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of `name` parsed as `V`, if given; an error naming the flag otherwise.
    pub fn get<V: FromStr>(&self, name: &str) -> Result<Option<V>, UsageError> {
        match self.values.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| UsageError(format!("`--{name} {v}`: not a valid {}", std::any::type_name::<V>()))),
        }
    }

    /// Like [`get`](Self::get), with `default` when the flag is absent.
    pub fn get_or<V: FromStr>(&self, name: &str, default: V) -> Result<V, UsageError> {
        Ok(self.get(name)?.unwrap_or(default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &[Flag] = &[
        Flag { name: "batch", value: Some("N"), default: "1", help: "sequences" },
        Flag { name: "rotary", value: None, default: "", help: "rotary positions" },
    ];

    fn parse(v: &[&str]) -> Result<Option<Args>, UsageError> {
        Args::parse(v.iter().map(|s| s.to_string()), FLAGS)
    }

    #[test]
    fn flags_parse_and_fail_with_their_names() {
        let a = parse(&["--batch", "4", "--rotary"]).unwrap().unwrap();
        assert_eq!(a.get::<usize>("batch").unwrap(), Some(4));
        assert!(a.switch("rotary"));
        let a = parse(&["--batch=7"]).unwrap().unwrap();
        assert_eq!(a.get_or::<usize>("batch", 1).unwrap(), 7);
        assert!(!a.switch("rotary"));
        assert!(parse(&["--help"]).unwrap().is_none());
        let e = |v: &[&str]| parse(v).err().expect("an error").to_string();
        assert!(e(&["--bach", "4"]).contains("unknown flag `--bach`"));
        assert!(e(&["--batch"]).contains("`--batch` needs a value"));
        assert!(e(&["--rotary=1"]).contains("takes no value"));
        assert!(e(&["4"]).contains("unexpected argument `4`"));
        let a = parse(&["--batch", "four"]).unwrap().unwrap();
        assert!(a.get::<usize>("batch").unwrap_err().to_string().contains("--batch four"));
        assert!(usage("x", "about", FLAGS).contains("--batch N  sequences [default: 1]"));
    }
}
