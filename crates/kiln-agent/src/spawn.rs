//! Starting a command with `posix_spawn` (glibc: `clone(CLONE_VM | CLONE_VFORK)`), not
//! `fork`.
//!
//! A fork copies the agent's page tables, then both sides take copy-on-write faults until
//! the child's exec throws the copy away: measured, that was a quarter of the agent's CPU
//! per command (`bench/load`'s `true`). std's `Command` would use `posix_spawn` itself,
//! but not in this static binary (it finds `posix_spawn_file_actions_addchdir_np` with
//! `dlsym`), nor with the `pre_exec` that unblocks the signals the agent waits for with
//! a signalfd (std does not reset the mask). Here both are spawn attributes.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr;

use nix::libc;

/// What to start: everything already resolved and NUL-free.
#[derive(Debug)]
pub struct Launch {
    /// The executable's path, as exec takes it (no `PATH` search: already done).
    pub program: CString,
    /// `argv`, its first element as the caller named the program.
    pub argv: Vec<CString>,
    /// `NAME=value` entries: the whole environment.
    pub envp: Vec<CString>,
    /// The working directory.
    pub cwd: CString,
}

impl Launch {
    /// The same, run as `/bin/sh PROGRAM ARGS…`: what `execvp` does with a file the
    /// kernel cannot execute (a script without `#!`).
    pub fn as_sh_script(&self) -> Launch {
        let sh = c"/bin/sh".to_owned();
        Launch {
            argv: [sh.clone(), self.program.clone()]
                .into_iter()
                .chain(self.argv.iter().skip(1).cloned())
                .collect(),
            program: sh,
            envp: self.envp.clone(),
            cwd: self.cwd.clone(),
        }
    }
}

/// The parent's ends of a started command's standard streams, and its pid (also its
/// process group).
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    /// Present when the command reads a pipe (`stdin` data, or no `/dev/null`).
    pub stdin: Option<File>,
    pub stdout: File,
    pub stderr: File,
}

/// Starts `launch` in a process group of its own, with an empty signal mask and SIGPIPE
/// at its default (as std's spawn leaves it), stdin from `/dev/null` unless `pipe_stdin`,
/// stdout and stderr into pipes. The error is exec's (`ENOENT`, `EACCES`, `ENOEXEC`, …).
pub fn spawn(launch: &Launch, pipe_stdin: bool) -> io::Result<Spawned> {
    let null = match pipe_stdin {
        false => File::open("/dev/null").ok().map(OwnedFd::from),
        true => None,
    };
    // A rootfs without /dev/null gets a pipe too: closed once written, it reads as EOF.
    let (stdin_child, stdin_parent) = match null {
        Some(null) => (null, None),
        None => {
            let (reader, writer) = io::pipe()?;
            (
                OwnedFd::from(reader),
                Some(File::from(OwnedFd::from(writer))),
            )
        }
    };
    let (stdout_parent, stdout_child) = io::pipe()?;
    let (stderr_parent, stderr_child) = io::pipe()?;
    let pid = posix_spawn(
        launch,
        [
            stdin_child.as_raw_fd(),
            stdout_child.as_raw_fd(),
            stderr_child.as_raw_fd(),
        ],
    )?;
    // The child's ends close here (and are CLOEXEC in any other child).
    Ok(Spawned {
        pid,
        stdin: stdin_parent,
        stdout: File::from(OwnedFd::from(stdout_parent)),
        stderr: File::from(OwnedFd::from(stderr_parent)),
    })
}

/// `posix_spawn` with `stdio[i]` as fd `i`, `launch.cwd`, a new process group, an empty
/// mask and SIGPIPE defaulted. The file actions and attributes are freed on every path.
fn posix_spawn(launch: &Launch, stdio: [RawFd; 3]) -> io::Result<i32> {
    let check = |rc: libc::c_int| match rc {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    };
    let argv = nul_terminated(&launch.argv);
    let envp = nul_terminated(&launch.envp);
    // Both storages outlive their wrappers (declared first, dropped last).
    let mut actions_storage = MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
    let mut attr_storage = MaybeUninit::<libc::posix_spawnattr_t>::uninit();
    // SAFETY: init is the documented first call on uninitialised storage; on success the
    // object is destroyed by `Actions`' drop, and only used through that pointer.
    check(unsafe { libc::posix_spawn_file_actions_init(actions_storage.as_mut_ptr()) })?;
    let actions = Actions(actions_storage.as_mut_ptr());
    // SAFETY: as above, for the attributes object and `Attr`'s drop.
    check(unsafe { libc::posix_spawnattr_init(attr_storage.as_mut_ptr()) })?;
    let attr = Attr(attr_storage.as_mut_ptr());
    // SAFETY: both objects are initialised (above) and outlive these calls; the fds are
    // open for the duration of the spawn; `cwd` is a NUL-terminated string that glibc
    // copies; the sigsets are initialised by sigemptyset before use.
    unsafe {
        for (target, fd) in stdio.into_iter().enumerate() {
            check(libc::posix_spawn_file_actions_adddup2(
                actions.0,
                fd,
                target as libc::c_int,
            ))?;
        }
        check(libc::posix_spawn_file_actions_addchdir_np(
            actions.0,
            launch.cwd.as_ptr(),
        ))?;
        let mut mask = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(mask.as_mut_ptr());
        check(libc::posix_spawnattr_setsigmask(attr.0, mask.as_ptr()))?;
        let mut defaults = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(defaults.as_mut_ptr());
        libc::sigaddset(defaults.as_mut_ptr(), libc::SIGPIPE);
        check(libc::posix_spawnattr_setsigdefault(
            attr.0,
            defaults.as_ptr(),
        ))?;
        check(libc::posix_spawnattr_setpgroup(attr.0, 0))?;
        let flags = libc::POSIX_SPAWN_SETPGROUP
            | libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF;
        check(libc::posix_spawnattr_setflags(
            attr.0,
            flags as libc::c_short,
        ))?;
    }
    let mut pid: libc::pid_t = 0;
    // SAFETY: `program` and every `argv`/`envp` entry are NUL-terminated strings that live
    // until this returns; both arrays end with a null pointer; the actions and attributes
    // are initialised. posix_spawn only reads them.
    check(unsafe {
        libc::posix_spawn(
            &mut pid,
            launch.program.as_ptr(),
            actions.0,
            attr.0,
            argv.as_ptr(),
            envp.as_ptr(),
        )
    })?;
    Ok(pid)
}

/// The `char *const[]` exec takes: pointers into `strings`, then a null.
fn nul_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| CStr::as_ptr(s).cast_mut())
        .chain([ptr::null_mut()])
        .collect()
}

struct Actions(*mut libc::posix_spawn_file_actions_t);

impl Drop for Actions {
    fn drop(&mut self) {
        // SAFETY: the pointer was initialised by posix_spawn_file_actions_init and is
        // destroyed once, here.
        unsafe { libc::posix_spawn_file_actions_destroy(self.0) };
    }
}

struct Attr(*mut libc::posix_spawnattr_t);

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: the pointer was initialised by posix_spawnattr_init and is destroyed
        // once, here.
        unsafe { libc::posix_spawnattr_destroy(self.0) };
    }
}
