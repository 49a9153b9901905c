//! What a child does before exec: enter a task's sandbox (`sys::spawn_in_sandbox`), or join
//! a running task's namespaces (`shoal exec`). It runs in the child, on fds and C strings
//! prepared before: system calls only, with no allocation, lock or panic.

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{chdir, sethostname, setsid};

/// What a task's child process does before exec.
pub(crate) struct SandboxEntry {
    /// The network namespace to join (opened before clone, close-on-exec).
    pub netns: OwnedFd,
    /// The mount namespace the task's own is copied from (`sandbox::task_mounts`); `None`:
    /// the caller's.
    pub mounts: Option<BorrowedFd<'static>>,
    pub hostname: OsString,
    /// Generated files bind-mounted over `/etc/resolv.conf` and `/etc/hosts`.
    pub resolv_conf: CString,
    pub hosts: CString,
    pub workdir: CString,
}

impl SandboxEntry {
    /// Runs in the child before exec. Only system calls: no allocation, no locks.
    pub(crate) fn enter(&self) -> io::Result<()> {
        setns(&self.netns, CloneFlags::CLONE_NEWNET)?;
        if let Some(mounts) = self.mounts {
            // Allowed: the child shares no root or cwd (no CLONE_FS) with the daemon.
            setns(mounts, CloneFlags::CLONE_NEWNS)?;
        }
        unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNS)?;
        sethostname(&self.hostname)?;
        // Nothing mounted from here on may leak back to the host.
        mount(
            None::<&CStr>,
            c"/",
            None::<&CStr>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&CStr>,
        )?;
        for (source, target) in [
            (&self.resolv_conf, c"/etc/resolv.conf"),
            (&self.hosts, c"/etc/hosts"),
        ] {
            mount(
                Some(source.as_c_str()),
                target,
                None::<&CStr>,
                MsFlags::MS_BIND,
                None::<&CStr>,
            )?;
        }
        // Drop this copy of /run/netns so the task does not pin other namespaces alive
        // (only when made from the caller's namespace: `task_mounts` has no /run/netns).
        // It fails harmlessly when /run/netns is not a mount point.
        let _ = umount2(c"/run/netns", MntFlags::MNT_DETACH);
        // Its own session and process group, so that stop() can signal the whole task.
        setsid()?;
        chdir(self.workdir.as_c_str())?;
        Ok(())
    }
}

/// What a `shoal exec` child does before exec: join a task's namespaces.
pub(crate) struct JoinEntry {
    /// Opened before fork from /proc/PID/ns/{net,uts,mnt}.
    pub net: OwnedFd,
    pub uts: OwnedFd,
    pub mnt: OwnedFd,
}

impl JoinEntry {
    pub(crate) fn enter(&self) -> io::Result<()> {
        setns(&self.net, CloneFlags::CLONE_NEWNET)?;
        setns(&self.uts, CloneFlags::CLONE_NEWUTS)?;
        // Last: entering a mount namespace resets root and cwd to that namespace's root.
        setns(&self.mnt, CloneFlags::CLONE_NEWNS)?;
        chdir(c"/")?;
        Ok(())
    }
}
