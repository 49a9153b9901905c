//! `${VAR}` interpolation of a compose file's values, as docker's compose loader does it:
//! `$VAR`, `${VAR}`, `${VAR:-default}` (unset or empty), `${VAR-default}` (unset),
//! `${VAR:?message}` / `${VAR?message}` (an error), `${VAR:+other}` / `${VAR+other}`, and
//! `$$` for a literal `$`. Defaults may hold further `${...}`.
//!
//! Hand-written: the crates that expand variables (shellexpand, subst) have no `?` errors
//! or `+` forms, and docker's grammar is this small.

use std::collections::BTreeMap;

/// What interpolating one string found wrong (the caller adds the file and key path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `${VAR:?message}` with VAR unset (or empty, with `:`): docker's words.
    Required { var: String, message: String },
    /// A `${` without its `}`, or a name that is not one.
    Invalid(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Required { var, message } => {
                write!(f, "required variable {var} is missing a value: {message}")
            }
            Problem::Invalid(s) => write!(f, "invalid interpolation format: {s:?}"),
        }
    }
}

/// The environment values are read from; `unset` collects the names used while unset with
/// no default (docker warns "The X variable is not set. Defaulting to a blank string.").
pub struct Env<'a> {
    pub vars: &'a BTreeMap<String, String>,
    pub unset: Vec<String>,
}

impl Env<'_> {
    /// `s` with its variables replaced.
    pub fn expand(&mut self, s: &str) -> Result<String, Problem> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('$') {
                out.push('$');
                rest = r;
            } else if let Some(body) = after.strip_prefix('{') {
                let end = closing_brace(body).ok_or_else(|| Problem::Invalid(s.to_string()))?;
                out.push_str(&self.braced(&body[..end], s)?);
                rest = &body[end + 1..];
            } else {
                let len = name_len(after);
                if len == 0 {
                    // A lone `$` followed by something that is no name: kept, as docker does.
                    out.push('$');
                    rest = after;
                } else {
                    out.push_str(&self.lookup(&after[..len]).unwrap_or_else(|| {
                        self.unset.push(after[..len].to_string());
                        String::new()
                    }));
                    rest = &after[len..];
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    /// The inside of `${...}`.
    fn braced(&mut self, body: &str, whole: &str) -> Result<String, Problem> {
        let len = name_len(body);
        if len == 0 {
            return Err(Problem::Invalid(whole.to_string()));
        }
        let (name, op) = body.split_at(len);
        let value = self.lookup(name);
        let colon = op.starts_with(':');
        let op = op.strip_prefix(':').unwrap_or(op);
        // With `:`, an empty value counts as unset.
        let set = value.as_deref().is_some_and(|v| !(colon && v.is_empty()));
        let Some(kind) = op.chars().next() else {
            if colon {
                return Err(Problem::Invalid(whole.to_string()));
            }
            return Ok(value.unwrap_or_else(|| {
                self.unset.push(name.to_string());
                String::new()
            }));
        };
        let arg = &op[1..];
        match kind {
            '-' if set => Ok(value.unwrap_or_default()),
            '-' => self.expand(arg),
            '?' if set => Ok(value.unwrap_or_default()),
            '?' => Err(Problem::Required {
                var: name.to_string(),
                message: self.expand(arg)?,
            }),
            '+' if set => self.expand(arg),
            '+' => Ok(String::new()),
            _ => Err(Problem::Invalid(whole.to_string())),
        }
    }
}

/// Length of the variable name at the start of `s` (`[A-Za-z_][A-Za-z0-9_]*`).
fn name_len(s: &str) -> usize {
    let mut n = 0;
    for (i, c) in s.char_indices() {
        let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
        if !ok {
            break;
        }
        n = i + c.len_utf8();
    }
    n
}

/// Index of the `}` that closes a `${` whose body starts `s`, nested `${...}` counted.
fn closing_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(s: &str) -> (Result<String, Problem>, Vec<String>) {
        let vars: BTreeMap<String, String> = [("TAG", "2"), ("EMPTY", ""), ("REG", "r:5000")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut env = Env {
            vars: &vars,
            unset: vec![],
        };
        let r = env.expand(s);
        (r, env.unset)
    }

    fn ok(s: &str) -> String {
        expand(s).0.unwrap()
    }

    #[test]
    fn every_form_docker_reads() {
        assert_eq!(ok("${REG}/app:${TAG}"), "r:5000/app:2");
        assert_eq!(ok("$REG/app:$TAG-x"), "r:5000/app:2-x");
        assert_eq!(ok("${NOPE:-1.0}"), "1.0");
        assert_eq!(ok("${EMPTY:-d}"), "d");
        assert_eq!(ok("${EMPTY-d}"), "");
        assert_eq!(ok("${NOPE-d}"), "d");
        assert_eq!(ok("${TAG:?unused}"), "2");
        assert_eq!(ok("${TAG:+set}"), "set");
        assert_eq!(ok("${NOPE:+set}"), "");
        assert_eq!(ok("${NOPE:-${TAG}}"), "2");
        assert_eq!(ok("$$TAG costs $5"), "$TAG costs $5");
        assert_eq!(ok("no variables"), "no variables");
    }

    #[test]
    fn unset_without_default_is_blank_and_reported() {
        let (r, unset) = expand("a${NOPE}b$ALSO_NOT");
        assert_eq!(r.unwrap(), "ab");
        assert_eq!(unset, ["NOPE", "ALSO_NOT"]);
    }

    #[test]
    fn required_and_malformed_are_errors() {
        assert_eq!(
            expand("${NOPE:?set NOPE to the tag}")
                .0
                .unwrap_err()
                .to_string(),
            "required variable NOPE is missing a value: set NOPE to the tag"
        );
        assert_eq!(
            expand("${EMPTY:?empty}").0.unwrap_err().to_string(),
            "required variable EMPTY is missing a value: empty"
        );
        assert_eq!(ok("${EMPTY?fine}"), "");
        assert!(matches!(expand("${TAG").0, Err(Problem::Invalid(_))));
        assert!(matches!(expand("${}").0, Err(Problem::Invalid(_))));
        assert!(matches!(expand("${TAG:}").0, Err(Problem::Invalid(_))));
    }
}
