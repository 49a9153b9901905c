//! Checking a spec before anything is created: the environment, the program, the hostname.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::ExecError;

/// The `PATH` every task starts with (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment of a task, in order: `PATH`, `HOSTNAME`, then the spec's entries (which
/// may override either). Later entries of the same key win.
pub(crate) fn task_env(
    hostname: &str,
    entries: &[String],
) -> Result<Vec<(String, String)>, ExecError> {
    let mut env = vec![
        ("PATH".to_string(), DEFAULT_PATH.to_string()),
        ("HOSTNAME".to_string(), hostname.to_string()),
    ];
    for entry in entries {
        let Some((key, value)) = entry.split_once('=') else {
            return Err(ExecError::InvalidEnv(entry.clone()));
        };
        if key.is_empty() || key.contains('\0') || value.contains('\0') {
            return Err(ExecError::InvalidEnv(entry.clone()));
        }
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value.to_string()));
    }
    Ok(env)
}

fn is_executable_file(path: &Path) -> Option<bool> {
    let meta = std::fs::metadata(path).ok()?;
    Some(meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Finds the file `program` names, the way a shell would: a name with a `/` is a path
/// (relative to `workdir`), any other name is looked up in `path_var`.
pub(crate) fn resolve_program(
    program: &str,
    path_var: &str,
    workdir: &Path,
) -> Result<PathBuf, ExecError> {
    if program.is_empty() || program.contains('\0') {
        return Err(ExecError::NotFound(program.to_string()));
    }
    if program.contains('/') {
        let path = workdir.join(program);
        return match is_executable_file(&path) {
            Some(true) => Ok(path),
            Some(false) => Err(ExecError::NotExecutable(path)),
            None => Err(ExecError::NotFound(program.to_string())),
        };
    }
    let mut not_executable = None;
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = workdir.join(dir).join(program);
        match is_executable_file(&candidate) {
            Some(true) => return Ok(candidate),
            Some(false) => not_executable = not_executable.or(Some(candidate)),
            None => {}
        }
    }
    match not_executable {
        Some(path) => Err(ExecError::NotExecutable(path)),
        None => Err(ExecError::NotFound(program.to_string())),
    }
}

/// Checks a hostname the way `sethostname(2)` will.
pub(crate) fn check_hostname(hostname: &str) -> Result<(), ExecError> {
    if hostname.is_empty() || hostname.len() > 64 || hostname.contains(['\0', '/']) {
        return Err(ExecError::InvalidHostname(hostname.to_string()));
    }
    Ok(())
}

/// The short form of a task id used in names (first 12 characters, like Docker's).
pub(crate) fn short_id(task_id: &str) -> Result<&str, ExecError> {
    let ok = !task_id.is_empty()
        && task_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(ExecError::InvalidTaskId(task_id.to_string()));
    }
    Ok(&task_id[..task_id.len().min(12)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_starts_with_path_and_hostname_and_lets_the_spec_override() {
        let env = task_env("h1", &["A=1".into(), "PATH=/x".into(), "B=a=b".into()]).unwrap();
        assert_eq!(
            env,
            vec![
                ("HOSTNAME".into(), "h1".into()),
                ("A".into(), "1".into()),
                ("PATH".into(), "/x".into()),
                ("B".into(), "a=b".into()),
            ]
        );
        assert!(matches!(
            task_env("h", &["NOVALUE".into()]),
            Err(ExecError::InvalidEnv(_))
        ));
        assert!(matches!(
            task_env("h", &["=x".into()]),
            Err(ExecError::InvalidEnv(_))
        ));
    }

    #[test]
    fn programs_are_found_in_path_or_reported_clearly() {
        let sh = resolve_program("sh", DEFAULT_PATH, Path::new("/")).unwrap();
        assert!(sh.ends_with("sh"));
        assert_eq!(
            resolve_program("/bin/sh", "", Path::new("/")).unwrap(),
            Path::new("/bin/sh")
        );
        let err = resolve_program("no-such-program-xyz", DEFAULT_PATH, Path::new("/")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "executable file not found: no-such-program-xyz"
        );
        let plain = std::env::temp_dir().join(format!("shoal-exec-plain-{}", std::process::id()));
        std::fs::write(&plain, "not a program").unwrap();
        let err = resolve_program(plain.to_str().unwrap(), "", Path::new("/"));
        std::fs::remove_file(&plain).unwrap();
        assert!(matches!(err, Err(ExecError::NotExecutable(_))), "{err:?}");
        // Relative paths are relative to the working directory.
        assert_eq!(
            resolve_program("bin/sh", "", Path::new("/usr")).unwrap(),
            Path::new("/usr/bin/sh")
        );
    }

    #[test]
    fn short_ids_and_hostnames() {
        assert_eq!(short_id("0123456789abcdefghij").unwrap(), "0123456789ab");
        assert_eq!(short_id("abc").unwrap(), "abc");
        assert!(short_id("a/b").is_err());
        assert!(short_id("").is_err());
        assert!(check_hostname("web.1").is_ok());
        assert!(check_hostname("").is_err());
        assert!(check_hostname(&"x".repeat(65)).is_err());
    }
}
