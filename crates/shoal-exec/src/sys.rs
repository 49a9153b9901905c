//! The only unsafe code of the crate: namespace entry between `fork` and `exec`.
//!
//! Everything a child needs (fds, C strings) is prepared in the parent; the closures below
//! only make system calls, which is what `pre_exec` allows.
#![allow(unsafe_code)]

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{chdir, sethostname, setsid};

/// What a task's child process does before exec.
pub(crate) struct SandboxEntry {
    /// The network namespace to join (opened before fork, close-on-exec).
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
    /// Runs in the child after fork. Only async-signal-safe calls: no allocation, no locks.
    fn enter(&self) -> io::Result<()> {
        setns(&self.netns, CloneFlags::CLONE_NEWNET)?;
        if let Some(mounts) = self.mounts {
            // Allowed: this child is single-threaded, so its root and cwd are its own.
            setns(mounts, CloneFlags::CLONE_NEWNS)?;
        }
        unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNS)?;
        sethostname(&self.hostname)?;
        // Nothing mounted from here on may leak back to the host.
        mount(
            None::<&std::ffi::CStr>,
            c"/",
            None::<&std::ffi::CStr>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&std::ffi::CStr>,
        )?;
        for (source, target) in [
            (&self.resolv_conf, c"/etc/resolv.conf"),
            (&self.hosts, c"/etc/hosts"),
        ] {
            mount(
                Some(source.as_c_str()),
                target,
                None::<&std::ffi::CStr>,
                MsFlags::MS_BIND,
                None::<&std::ffi::CStr>,
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

/// Makes `cmd`'s child enter the sandbox described by `entry` before exec.
pub(crate) fn enter_sandbox_on_spawn(cmd: &mut tokio::process::Command, entry: SandboxEntry) {
    // SAFETY: `enter` runs between fork and exec in the child, which has one thread. It only
    // makes system calls (setns, unshare, sethostname, mount, umount2, setsid, chdir) on data
    // prepared before fork; it neither allocates nor takes locks, so it cannot deadlock on
    // state copied from other threads of the parent.
    unsafe {
        cmd.pre_exec(move || entry.enter());
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
    fn enter(&self) -> io::Result<()> {
        setns(&self.net, CloneFlags::CLONE_NEWNET)?;
        setns(&self.uts, CloneFlags::CLONE_NEWUTS)?;
        // Last: entering a mount namespace resets root and cwd to that namespace's root.
        setns(&self.mnt, CloneFlags::CLONE_NEWNS)?;
        chdir(c"/")?;
        Ok(())
    }
}

/// Makes `cmd`'s child join the namespaces in `entry` before exec.
pub(crate) fn join_on_spawn(cmd: &mut std::process::Command, entry: JoinEntry) {
    // SAFETY: as above: between fork and exec in a single-threaded child, only setns and
    // chdir on fds and a static C string prepared before fork.
    unsafe {
        cmd.pre_exec(move || entry.enter());
    }
}
