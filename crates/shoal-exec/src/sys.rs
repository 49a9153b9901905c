//! The only unsafe code of the crate: starting a task's process in its sandbox, waiting for
//! it by pidfd, and running a `shoal exec` child's `JoinEntry` between fork and exec.
//!
//! A task is started with `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`, as glibc's
//! posix_spawn starts a process: the child borrows the daemon's memory until it execs, so a
//! start costs the same whatever the daemon's size (fork copies the page tables and makes
//! every page copy-on-write for the daemon). No library fits: std's and tokio's `Command`
//! fall back to fork as soon as `pre_exec` is set, and posix_spawn cannot setns, unshare or
//! mount. The glibc `clone` wrapper runs the child on a stack of its own (a raw clone3 would
//! return into the parent's stack frame).
//!
//! The child runs on the daemon's memory while the thread that cloned it waits and the
//! daemon's other threads keep running. So everything it needs is prepared before clone;
//! it only makes system calls (no allocation, lock, panic or Rust I/O), and reports a
//! failure through memory the parent owns.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicI32, Ordering};
use std::{mem, ptr};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};

use crate::entry::{JoinEntry, SandboxEntry};

/// The program of a task: the file to execute, `argv` (from the name as given) and `envp`.
pub(crate) struct Program {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

/// The child's stack: mapped per start, above a guard region, so that an overflow faults
/// instead of writing over the daemon's memory.
struct Stack(*mut c_void);

const STACK: usize = 128 << 10;
/// A multiple of every page size of x86_64 and aarch64.
const GUARD: usize = 64 << 10;

impl Stack {
    fn new() -> io::Result<Self> {
        let (prot, flags) = (
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
        );
        // SAFETY: a new anonymous mapping, which nothing else refers to.
        let base = unsafe { libc::mmap(ptr::null_mut(), GUARD + STACK, prot, flags, -1, 0) };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack(base);
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: the part of that mapping above the guard.
        if unsafe { libc::mprotect(stack.top().cast::<u8>().sub(STACK).cast(), STACK, rw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// Its top, where the child starts (stacks grow down on x86_64 and aarch64); page-aligned.
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the mapping.
        unsafe { self.0.cast::<u8>().add(GUARD + STACK).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; the child no longer runs on it.
        unsafe { libc::munmap(self.0, GUARD + STACK) };
    }
}

/// `fd`, or a copy of it above 2: so that no dup2 onto 0, 1 or 2 in the child overwrites
/// the source of another.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let copy = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: F_DUPFD_CLOEXEC made this fd, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// What the child reads, and `errno`, the one thing it writes. On the parent's stack, which
/// the parent's thread does not use again until the child has exec'd or exited.
struct Child<'a> {
    path: &'a CStr,
    argv: *const *const c_char,
    envp: *const *const c_char,
    stdio: [RawFd; 3],
    entry: &'a SandboxEntry,
    /// The signal mask of the parent's thread before it blocked every signal.
    mask: libc::sigset_t,
    errno: AtomicI32,
}

/// Starts `program` with `stdio` as its fds 0, 1 and 2, in the sandbox of `entry`. Returns
/// its pid and pidfd (close-on-exec) once it has exec'd; a failure before (entering the
/// sandbox, or exec itself) is returned as the error the child met, the child reaped.
pub(crate) fn spawn_in_sandbox(
    program: &Program,
    stdio: [OwnedFd; 3],
    entry: &SandboxEntry,
) -> io::Result<(u32, OwnedFd)> {
    let nul_terminated = |v: &[CString]| -> Vec<*const c_char> {
        v.iter().map(|s| s.as_ptr()).chain([ptr::null()]).collect()
    };
    let (argv, envp) = (nul_terminated(&program.argv), nul_terminated(&program.envp));
    let [stdin, stdout, stderr] = stdio;
    let stdio = [
        above_stdio(stdin)?,
        above_stdio(stdout)?,
        above_stdio(stderr)?,
    ];
    let stack = Stack::new()?;

    // No handler of the daemon may run in the child (on the daemon's memory) before the
    // child has reset them all: every signal stays blocked until then.
    // SAFETY: sigset_t is plain data, filled by sigfillset and pthread_sigmask.
    let (mut all, mut mask): (libc::sigset_t, libc::sigset_t) = unsafe { mem::zeroed() };
    unsafe { libc::sigfillset(&mut all) };
    match unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut mask) } {
        0 => {}
        e => return Err(io::Error::from_raw_os_error(e)),
    }
    let child = Child {
        path: &program.path,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        stdio: stdio.each_ref().map(|fd| fd.as_raw_fd()),
        entry,
        mask,
        errno: AtomicI32::new(0),
    };
    let mut pidfd: c_int = -1;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    // SAFETY: the child runs `child_main` on `stack` and reads `child`, all of which outlive
    // this call: with CLONE_VFORK it returns only once the child has exec'd or exited.
    // CLONE_PIDFD stores the pidfd through the parent-tid argument.
    let pid = unsafe {
        let arg = ptr::from_ref(&child).cast_mut().cast();
        libc::clone(
            child_main,
            stack.top(),
            flags,
            arg,
            &mut pidfd as *mut c_int,
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &mask, ptr::null_mut()) };
    if pid < 0 {
        return Err(clone_error);
    }
    // SAFETY: CLONE_PIDFD made this fd for us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // Relaxed is enough: the kernel resumed this thread only after the child's last write.
    match child.errno.load(Ordering::Relaxed) {
        0 => Ok((pid as u32, pidfd)),
        errno => {
            // It has exited, or is about to: reap it, so that nothing of it is left.
            let _ = reap(pidfd.as_fd(), true);
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// The child's life: it returns only through exec, or `_exit(127)` with `errno` set.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: the `Child` of `spawn_in_sandbox`, alive until the child has exec'd or exited.
    let child = unsafe { &*arg.cast::<Child<'_>>() };
    // SAFETY: we are that child.
    let errno = unsafe { prepare_and_exec(child) };
    child.errno.store(
        if errno > 0 { errno } else { libc::EINVAL },
        Ordering::Relaxed,
    );
    // SAFETY: ends this process only; no destructor or atexit handler of the daemon's runs.
    unsafe { libc::_exit(127) }
}

/// Returns only if something failed, with its errno.
///
/// # Safety
/// Only in the child made by `spawn_in_sandbox`, with every signal blocked.
unsafe fn prepare_and_exec(child: &Child<'_>) -> c_int {
    // SAFETY: system calls on memory that the parent prepared and keeps alive.
    unsafe {
        // Without CLONE_SIGHAND the handler table is the child's own copy. Every handler is
        // reset before signals are unblocked, and SIGPIPE (Rust ignores it) as std's Command
        // does; other ignored signals stay ignored. glibc refuses its own two (32, 33): skipped.
        let default: libc::sigaction = mem::zeroed();
        for sig in 1..=64 {
            let mut old: libc::sigaction = mem::zeroed();
            if libc::sigaction(sig, ptr::null(), &mut old) == 0
                && (sig == libc::SIGPIPE
                    || ![libc::SIG_DFL, libc::SIG_IGN].contains(&old.sa_sigaction))
                && libc::sigaction(sig, &default, ptr::null_mut()) != 0
            {
                return Errno::last_raw();
            }
        }
        // The mask the task would have had from fork.
        let e = libc::pthread_sigmask(libc::SIG_SETMASK, &child.mask, ptr::null_mut());
        if e != 0 {
            return e;
        }
        // Every source is above 2 (see `spawn_in_sandbox`), so dup2 also clears FD_CLOEXEC.
        for (target, &source) in (0..).zip(&child.stdio) {
            if libc::dup2(source, target) < 0 {
                return Errno::last_raw();
            }
        }
        if let Err(e) = child.entry.enter() {
            return e.raw_os_error().unwrap_or(libc::EINVAL);
        }
        // execvpe as std's execvp: a script without `#!` runs with /bin/sh.
        libc::execvpe(child.path.as_ptr(), child.argv, child.envp);
        Errno::last_raw()
    }
}

/// How a reaped process ended, as waitid says: `code` is `si_code` (CLD_EXITED,
/// CLD_KILLED, CLD_DUMPED), `status` the exit code or the signal.
pub(crate) struct Ended {
    pub code: c_int,
    pub status: c_int,
}

/// Reaps the process of `pidfd` if it has ended (`block`: once it has); `Ok(None)` while it
/// runs. (nix's `waitid` refuses the real-time signals.)
pub(crate) fn reap(pidfd: BorrowedFd<'_>, block: bool) -> io::Result<Option<Ended>> {
    let flags = libc::WEXITED | if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: a zeroed siginfo_t is valid; waitid fills it in, or leaves si_pid 0 when
        // nothing has ended (WNOHANG), and reads nothing else.
        let mut info: libc::siginfo_t = unsafe { mem::zeroed() };
        let id = pidfd.as_raw_fd() as libc::id_t;
        if unsafe { libc::waitid(libc::P_PIDFD, id, &mut info, flags) } == 0 {
            // SAFETY: set by waitid for SIGCHLD (the only signal it reports).
            let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
            return Ok((pid != 0).then_some(Ended {
                code: info.si_code,
                status,
            }));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Makes `cmd`'s child join the namespaces in `entry` before exec.
pub(crate) fn join_on_spawn(cmd: &mut std::process::Command, entry: JoinEntry) {
    // SAFETY: between fork and exec in a single-threaded child, only setns and chdir on fds
    // and a static C string prepared before fork; no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || entry.enter());
    }
}
