//! Named network namespaces, kept the way iproute2 keeps them.
//!
//! A namespace named `x` is a bind mount of a thread's `/proc/thread-self/ns/net` on the file
//! `/run/netns/x`, and `/run/netns` itself is a shared mount point, so `ip netns list` and
//! `ip netns exec x ...` see ours and we see theirs.
//!
//! Work inside a namespace happens on a short-lived std thread that `setns`es into it and ends
//! with the work: a thread of the caller (a tokio worker above all) never changes namespace.
//! Sockets keep the namespace they were created in, and children spawned from such a thread
//! inherit it, so "create it over there, use it from here" is the pattern.
//!
//! Architecture invariant: when the environment variable [`REGISTRY_ENV`] names a directory,
//! every namespace created here leaves an empty file of the same name in it (removed again by
//! [`delete_netns`]). `shoal lab` sets it for its daemons to find and delete the namespaces
//! they made, even after a crash.

use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::statfs::{NSFS_MAGIC, statfs};

use crate::error::{NetError, Result};

/// Where named namespaces live (iproute2's `NETNS_RUN_DIR`).
pub const NETNS_DIR: &str = "/run/netns";

/// Environment variable naming a directory in which [`create_netns`] records each namespace
/// it creates (one empty file per name).
pub const REGISTRY_ENV: &str = "SHOAL_NETNS_REGISTRY";

/// Serialises the one-time setup of `/run/netns` within this process.
static NETNS_DIR_SETUP: Mutex<()> = Mutex::new(());

/// The file that holds namespace `name`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Checks that `name` is a plain file name iproute2 would accept.
pub fn validate_netns_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NetError::InvalidNetnsName(name.to_string()))
    }
}

/// Whether `path` is a mounted namespace file (and not, say, a stale empty file).
fn is_nsfs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Whether a namespace named `name` exists under `/run/netns`.
pub fn netns_exists(name: &str) -> bool {
    validate_netns_name(name).is_ok() && is_nsfs(&netns_path(name))
}

/// The names under `/run/netns`, sorted (empty if the directory does not exist).
pub fn list_netns() -> Result<Vec<String>> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetError::io(format!("read {NETNS_DIR}"), e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| NetError::io(format!("read {NETNS_DIR}"), e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Makes `/run/netns` exist and be a shared mount point, as `ip netns add` does, so that
/// namespace mounts propagate to mount namespaces that share it.
fn ensure_netns_dir() -> Result<()> {
    let _guard = NETNS_DIR_SETUP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    fs::create_dir_all(NETNS_DIR).map_err(|e| NetError::io(format!("create {NETNS_DIR}"), e))?;
    let mut bound = false;
    loop {
        match mount(
            None::<&str>,
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            // Not a mount point yet: bind it onto itself once, then make that shared.
            Err(Errno::EINVAL) if !bound => {
                mount(
                    Some(NETNS_DIR),
                    NETNS_DIR,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| NetError::io(format!("bind-mount {NETNS_DIR} on itself"), e))?;
                bound = true;
            }
            Err(e) => {
                return Err(NetError::io(format!("make {NETNS_DIR} a shared mount"), e));
            }
        }
    }
}

/// Creates the named network namespace `name` (like `ip netns add`). Its `lo` is down.
///
/// Fails with [`NetError::NetnsExists`] if it exists. A stale empty file of that name (left by
/// a crash between creating the file and mounting on it) is replaced.
pub fn create_netns(name: &str) -> Result<()> {
    validate_netns_name(name)?;
    ensure_netns_dir()?;
    let path = netns_path(name);
    if is_nsfs(&path) {
        return Err(NetError::NetnsExists(name.to_string()));
    }
    // Replace a stale, unmounted file; a live namespace was excluded above.
    match fs::remove_file(&path) {
        Ok(()) => tracing::warn!(netns = name, "removed a stale namespace file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(NetError::io(format!("remove stale {}", path.display()), e)),
    }
    // Recorded before the file exists: a process killed between creating the file and
    // mounting on it (`lab down` ends daemons with cgroup.kill) must not leave a file that
    // nobody knows to remove.
    record(name, true);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => NetError::NetnsExists(name.to_string()),
            _ => NetError::io(format!("create {}", path.display()), e),
        })?;

    let target = path.clone();
    let made = std::thread::Builder::new()
        .name("shoal-netns-add".into())
        .spawn(move || -> Result<()> {
            // This thread alone moves to the new namespace; it ends right after.
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetError::io("unshare a new network namespace", e))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                NetError::io(
                    format!("bind-mount the new namespace on {}", target.display()),
                    e,
                )
            })
        })
        .map_err(|e| NetError::io("spawn a thread to create a namespace", e))?
        .join()
        .unwrap_or_else(|_| Err(NetError::ThreadPanicked(name.to_string())));
    if let Err(e) = made {
        let _ = fs::remove_file(&path);
        record(name, false);
        return Err(e);
    }
    tracing::debug!(netns = name, "created network namespace");
    Ok(())
}

/// Deletes the named namespace (like `ip netns delete`). Returns `false` if there was none.
///
/// The namespace itself (and every link in it) goes away once no process, socket or other
/// mount holds it any more.
pub fn delete_netns(name: &str) -> Result<bool> {
    validate_netns_name(name)?;
    let path = netns_path(name);
    if fs::symlink_metadata(&path).is_err() {
        record(name, false);
        return Ok(false);
    }
    match umount2(&path, MntFlags::MNT_DETACH) {
        // EINVAL: not mounted (a stale file); remove it all the same.
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(NetError::io(format!("unmount {}", path.display()), e)),
    }
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(NetError::io(format!("remove {}", path.display()), e)),
    }
    record(name, false);
    tracing::debug!(netns = name, "deleted network namespace");
    Ok(true)
}

/// Removes `name` if it is a stale entry: an empty file with no namespace mounted on it, as
/// a namespace made by a process in a mount namespace of its own leaves on the host once
/// that process has gone (a daemon run under `ip netns exec`: its bind mount never reached
/// the host's `/run/netns`, only the file did). A mounted namespace, another kind of file or
/// a file with content is left alone. Returns whether it removed one.
pub fn remove_if_stale(name: &str) -> Result<bool> {
    validate_netns_name(name)?;
    let path = netns_path(name);
    let stale = fs::symlink_metadata(&path)
        .is_ok_and(|m| m.file_type().is_file() && m.len() == 0 && !is_nsfs(&path));
    if !stale {
        return Ok(false);
    }
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(NetError::io(format!("remove stale {}", path.display()), e)),
    }
    record(name, false);
    tracing::info!(netns = name, "removed a stale namespace file");
    Ok(true)
}

/// [`remove_if_stale`] for every name under `/run/netns` that starts with `prefix` (a
/// node's own, e.g. its overlays' `shoal-ov-<node>-`); the names it removed.
pub fn remove_stale_netns(prefix: &str) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list_netns()? {
        if name.starts_with(prefix) && remove_if_stale(&name)? {
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Adds (or removes) `name` in the registry directory named by [`REGISTRY_ENV`], if any.
/// Best effort: a registry that cannot be written must not fail the namespace operation.
fn record(name: &str, present: bool) {
    let Some(dir) = std::env::var_os(REGISTRY_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let file = dir.join(name);
    let outcome = if present {
        fs::create_dir_all(&dir).and_then(|()| File::create(&file).map(drop))
    } else {
        match fs::remove_file(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    };
    if let Err(e) = outcome {
        tracing::warn!(netns = name, registry = %dir.display(), error = %e, "failed to update the namespace registry");
    }
}

/// A mount namespace without `/run/netns`, to make other mount namespaces from: a copy of
/// the caller's taken now, where `/run/netns` is unmounted and every mount is a slave of the
/// caller's (a mount made later on a shared mount of the host still arrives; nothing goes
/// back). Held by the returned fd alone (close-on-exec).
///
/// Why: `unshare(CLONE_NEWNS)` copies every mount of the namespace it starts from, and a node
/// with hundreds of tasks has a bind mount per network namespace under `/run/netns`; a task
/// whose mount namespace is made from this one copies a few dozen mounts however many
/// namespaces the node holds, and cannot pin any of them. Namespaces created afterwards
/// never appear in it: `/run/netns` is made a mount point (and shared) first, so their bind
/// mounts propagate only to copies of that mount, and this namespace has none.
pub fn mount_ns_without_netns() -> Result<OwnedFd> {
    ensure_netns_dir()?;
    std::thread::Builder::new()
        .name("shoal-mntns".into())
        .spawn(|| -> Result<OwnedFd> {
            // This thread alone moves (a mount namespace of its own needs its own root and
            // cwd: CLONE_FS); it ends right after, and the fd keeps the namespace.
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS)
                .map_err(|e| NetError::io("unshare a new mount namespace", e))?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_SLAVE,
                None::<&str>,
            )
            .map_err(|e| NetError::io("make the new mount namespace a slave", e))?;
            // A slave now, so the unmount stays in this namespace.
            match umount2(NETNS_DIR, MntFlags::MNT_DETACH) {
                Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(e) => {
                    return Err(NetError::io(
                        format!("unmount {NETNS_DIR} in the new mount namespace"),
                        e,
                    ));
                }
            }
            File::open("/proc/thread-self/ns/mnt")
                .map(OwnedFd::from)
                .map_err(|e| NetError::io("open the new mount namespace", e))
        })
        .map_err(|e| NetError::io("spawn a thread to make a mount namespace", e))?
        .join()
        .unwrap_or_else(|_| {
            Err(NetError::io(
                "make a mount namespace",
                std::io::Error::other("its thread panicked"),
            ))
        })
}

/// Opens namespace `name` for `setns` or for moving a link into it (the fd is close-on-exec).
pub fn open_netns(name: &str) -> Result<OwnedFd> {
    validate_netns_name(name)?;
    let path = netns_path(name);
    let file = File::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => NetError::NoSuchNetns(name.to_string()),
        _ => NetError::io(format!("open {}", path.display()), e),
    })?;
    if !is_nsfs(&path) {
        return Err(NetError::NotANetns(path));
    }
    Ok(file.into())
}

fn enter(fd: impl AsFd, name: &str) -> Result<()> {
    setns(fd, CloneFlags::CLONE_NEWNET)
        .map_err(|e| NetError::io(format!("enter network namespace {name}"), e))
}

/// Runs `f` on a new thread inside namespace `name` and waits for it (blocking).
///
/// Whatever `f` creates there (sockets, children) keeps that namespace; the thread ends with
/// `f`. Do not call this from async code: use [`run_in_netns_async`].
pub fn run_in_netns<F, R>(name: &str, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let fd = open_netns(name)?;
    let owned = name.to_string();
    std::thread::Builder::new()
        .name("shoal-netns".into())
        .spawn(move || -> Result<R> {
            enter(&fd, &owned)?;
            Ok(f())
        })
        .map_err(|e| NetError::io("spawn a thread to enter a namespace", e))?
        .join()
        .unwrap_or_else(|_| Err(NetError::ThreadPanicked(name.to_string())))
}

/// Like [`run_in_netns`], but awaits the thread instead of blocking the caller.
pub async fn run_in_netns_async<F, R>(name: &str, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let fd = open_netns(name)?;
    let owned = name.to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("shoal-netns".into())
        .spawn(move || {
            let outcome = enter(&fd, &owned).map(|()| f());
            let _ = tx.send(outcome);
        })
        .map_err(|e| NetError::io("spawn a thread to enter a namespace", e))?;
    rx.await
        .unwrap_or_else(|_| Err(NetError::ThreadPanicked(name.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_netns_name("shoal-task-0123abcd").is_ok());
        assert!(validate_netns_name("a.b_c-1").is_ok());
        for bad in ["", ".", "..", "a/b", "../x", "sp ace", &"x".repeat(65)] {
            assert!(
                validate_netns_name(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(!netns_exists("../etc"));
    }
}
