//! Compose files to shoal's specs, as `docker stack deploy` reads them, for `shoal stack
//! deploy`: the same service names (`STACK_svc`), networks (`STACK_net`), labels
//! (`com.docker.stack.namespace`) and spec fields as the docker CLI sends, so that `docker
//! stack ls` and `shoal stack ls` see the same stacks.
//!
//! Pure: the caller reads the files, the environment (with `.env`) and each `env_file`, and
//! carries out the plan.
//!
//! # Layout
//! - [`load`]: files in, a [`Stack`] out: parse, interpolate ([`interpolate`]), refuse keys
//!   shoal does not act on ([`keys`]), merge, read with compose_spec, convert ([`convert`]).
//! - [`plan`]: what a deploy does to the services already there.
//!
//! Architecture invariant: every key of a file either changes what is deployed or is
//! refused by its path; nothing is dropped.
#![forbid(unsafe_code)]

pub mod convert;
pub mod interpolate;
pub mod keys;
pub mod plan;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;
use shoal_types::ServiceSpec;

pub use plan::{Step, plan};

/// The label docker's `stack deploy` puts on a stack's services, containers and networks.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// The service label with the image as the file names it.
pub const IMAGE_LABEL: &str = "com.docker.stack.image";

/// A compose file as read: `name` is how errors name it (the path given to `-c`).
pub struct File {
    pub name: String,
    pub text: String,
}

/// What a stack is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    /// Networks the stack makes (the ones its services use), by their full name.
    pub networks: Vec<StackNetwork>,
    /// Networks the services use that must already exist (`external: true`).
    pub external_networks: Vec<String>,
    /// One spec per service, by name; networks named as `networks` (not ids).
    pub services: Vec<ServiceSpec>,
    /// Variables used while unset and without a default (docker warns of each).
    pub unset: Vec<String>,
}

/// An overlay network of a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackNetwork {
    pub name: String,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
}

/// Where a deploy reads from besides the files.
pub struct Context<'a> {
    /// The stack's name (`docker stack deploy ... NAME`).
    pub namespace: &'a str,
    /// The environment for `${VAR}` and for `environment` entries without a value: the
    /// process's, over the `.env` beside the first file (as docker's loader does).
    pub env: &'a BTreeMap<String, String>,
    /// The first file's directory: relative `env_file` and bind paths start there.
    pub base_dir: &'a Path,
    /// Reads an `env_file` (an absolute path) into its variables, in order.
    #[allow(clippy::type_complexity)]
    pub read_env_file: &'a mut dyn FnMut(&Path) -> Result<Vec<(String, String)>, String>,
}

/// Why a compose file cannot be deployed; the message names the file and the key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    /// A key shoal does not act on (`docker-compose.yml: services.web.privileged is not
    /// supported by shoal`): refused rather than ignored.
    #[error("{file}: {path} is not supported by shoal")]
    Unsupported { file: String, path: String },
    /// `${VAR:?message}` with VAR unset.
    #[error("{file}: {path}: {message}")]
    Interpolation {
        file: String,
        path: String,
        message: String,
    },
    /// Not YAML, a value of the wrong form, or a value shoal cannot run.
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// Reads `files` (later ones override earlier ones, key by key) into the stack `ctx` names.
pub fn load(files: &[File], ctx: Context<'_>) -> Result<Stack, ComposeError> {
    let mut merged = Value::Null;
    let mut interp = interpolate::Env {
        vars: ctx.env,
        unset: vec![],
    };
    for f in files {
        let mut v: Value = serde_yaml::from_str(&f.text).map_err(|e| ComposeError::Invalid {
            file: f.name.clone(),
            message: format!("not a compose file: {e}"),
        })?;
        if v.is_null() {
            v = Value::Mapping(Default::default());
        }
        // `<<: *anchor`, as docker's loader reads it.
        v.apply_merge().map_err(|e| ComposeError::Invalid {
            file: f.name.clone(),
            message: format!("not a compose file: {e}"),
        })?;
        if !v.is_mapping() {
            return Err(ComposeError::Invalid {
                file: f.name.clone(),
                message: "not a compose file: the top level must be a map (services: ...)".into(),
            });
        }
        interpolate_value(&mut v, &mut interp, &mut Vec::new()).map_err(|(path, message)| {
            ComposeError::Interpolation {
                file: f.name.clone(),
                path,
                message,
            }
        })?;
        if let Some(path) = keys::first_unsupported(&v) {
            return Err(ComposeError::Unsupported {
                file: f.name.clone(),
                path,
            });
        }
        merge(&mut merged, v);
    }
    let label = files
        .iter()
        .map(|f| f.name.as_str())
        .collect::<Vec<_>>()
        .join(" + ");
    let mut unset = interp.unset;
    unset.dedup();
    let mut stack = convert::convert(merged, &label, ctx)?;
    stack.unset = unset;
    Ok(stack)
}

/// Keys whose values are numbers or booleans: after `${VAR}` they are text, and docker's
/// loader turns them back as its schema says.
const TYPED_KEYS: &[&str] = &[
    "replicas",
    "parallelism",
    "max_attempts",
    "retries",
    "target",
    "published",
    "max_failure_ratio",
    "read_only",
    "attachable",
    "external",
    "disable",
];

type PathError = (String, String);

fn interpolate_value(
    v: &mut Value,
    env: &mut interpolate::Env<'_>,
    path: &mut Vec<String>,
) -> Result<(), PathError> {
    match v {
        Value::String(s) if s.contains('$') => {
            let out = env.expand(s).map_err(|p| (path.concat(), p.to_string()))?;
            let key = path.last().map_or("", |k| k.trim_start_matches('.'));
            *v = match TYPED_KEYS.contains(&key) {
                true => match serde_yaml::from_str::<Value>(&out) {
                    Ok(t @ (Value::Number(_) | Value::Bool(_))) => t,
                    _ => Value::String(out),
                },
                false => Value::String(out),
            };
        }
        Value::Mapping(m) => {
            for (k, child) in m.iter_mut() {
                let key = keys::key_text(k);
                path.push(if path.is_empty() {
                    key
                } else {
                    format!(".{key}")
                });
                interpolate_value(child, env, path)?;
                path.pop();
            }
        }
        Value::Sequence(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                path.push(format!("[{i}]"));
                interpolate_value(child, env, path)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

/// A later file over an earlier one: maps merge key by key, anything else is replaced.
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Mapping(a), Value::Mapping(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(old) => merge(old, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (into, from) => *into = from,
    }
}

/// `path` from `base` when relative.
pub(crate) fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        let joined = base.join(path);
        // `./data` reads as `<base>/data`, as docker prints it.
        joined
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect()
    }
}

#[cfg(test)]
mod tests;
