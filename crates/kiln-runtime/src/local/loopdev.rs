//! Loop devices, through the kernel's ioctls (`<linux/loop.h>`): attaching an image file
//! with `LOOP_CONFIGURE` (Linux 5.8) in one call, and finding devices left attached to
//! files under a directory.
//!
//! Every device is attached with `LO_FLAGS_AUTOCLEAR`: the kernel detaches it by itself
//! when its last user goes (the filesystem mounted from it, or our descriptor when the
//! mount never happened), so a crash cannot leak one for long.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Result, RuntimeError};

const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A loop device bound to an image file. Dropping it closes our descriptor; with
/// autoclear the device is detached once nothing else (a mount) holds it.
#[derive(Debug)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: PathBuf,
    _device: File,
}

/// How often a free device may be taken by someone else between asking and binding.
const ATTACH_ATTEMPTS: usize = 16;

/// Serializes this process's attaches (see [`attach`]).
static ATTACH_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Attaches `image` to a free loop device (direct I/O when the backing filesystem can
/// do it, so its blocks are not cached twice).
pub fn attach(image: &Path) -> Result<LoopDevice> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| RuntimeError::io("cannot open", image, e))?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| {
            RuntimeError::io(
                "cannot open (is the loop module loaded?)",
                "/dev/loop-control",
                e,
            )
        })?;
    // LOOP_CTL_GET_FREE hands the same free device to every caller until one configures
    // it: a burst of creates in this process would mostly lose that race (100 at once ran
    // out of attempts). One attach at a time here; other processes are still retried.
    let _turn = ATTACH_TURN.lock().unwrap_or_else(|p| p.into_inner());
    let mut last = std::io::Error::other("no attempt");
    for attempt in 0..ATTACH_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1 << attempt.min(5)));
        }
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(RuntimeError::io(
                "no free loop device from",
                "/dev/loop-control",
                std::io::Error::last_os_error(),
            ));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| RuntimeError::io("cannot open", &path, e))?;
        match configure(
            &device,
            &backing,
            image,
            LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO,
        )
        .or_else(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => configure(&device, &backing, image, LO_FLAGS_AUTOCLEAR),
            _ => Err(e),
        }) {
            Ok(()) => {
                return Ok(LoopDevice {
                    path,
                    _device: device,
                })
            }
            // Taken by another process between GET_FREE and CONFIGURE: ask again.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
            Err(e) => return Err(RuntimeError::io("cannot attach", image, e)),
        }
    }
    Err(RuntimeError::io("cannot attach", image, last))
}

fn configure(device: &File, backing: &File, image: &Path, flags: u32) -> std::io::Result<()> {
    let mut name = [0u8; LO_NAME_SIZE];
    let bytes = image.as_os_str().as_encoded_bytes();
    let len = bytes.len().min(LO_NAME_SIZE - 1);
    name[..len].copy_from_slice(&bytes[..len]);
    let config = LoopConfig {
        fd: u32::try_from(backing.as_raw_fd()).map_err(std::io::Error::other)?,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: name,
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: `config` is a `struct loop_config` that outlives the call; the kernel only
    // reads it. Both descriptors are open.
    let rc = unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            LOOP_CONFIGURE as _,
            std::ptr::from_ref(&config),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Loop devices whose backing file lies under `dir` (as `/sys/block` reports it), with
/// that file.
pub fn attached_under(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim_end_matches('\n');
        let backing = backing.strip_suffix(" (deleted)").unwrap_or(backing);
        if Path::new(backing).starts_with(dir) {
            found.push((
                PathBuf::from(format!("/dev/{name}")),
                PathBuf::from(backing),
            ));
        }
    }
    found
}

/// Asks the kernel to detach `device`: at once when unused, else (autoclear) as soon as
/// its last user goes.
pub fn detach(device: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .open(device)
        .map_err(|e| RuntimeError::io("cannot open", device, e))?;
    // SAFETY: LOOP_CLR_FD takes no argument; the descriptor is open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), LOOP_CLR_FD as _, 0) };
    match rc {
        0 => Ok(()),
        // Already detached (ENXIO) is what we wanted.
        _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) => Ok(()),
        _ => Err(RuntimeError::io(
            "cannot detach",
            device,
            std::io::Error::last_os_error(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_have_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
