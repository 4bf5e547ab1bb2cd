//! Unpacks one layer tar into its own directory, in the form overlayfs reads as a lower layer.
//!
//! OCI whiteouts become overlayfs whiteouts here, once, so that stacking layers later is just
//! a mount: `.wh.<name>` becomes a 0:0 character device `<name>`, and `.wh..wh..opq` becomes
//! the xattr `trusted.overlay.opaque=y` on its directory. Both need CAP_MKNOD/CAP_SYS_ADMIN.
//!
//! Safety against hostile tars: every entry path is normalised and must stay inside the layer
//! directory (`..` and absolute paths are rejected), no entry may be written through a symlink
//! (a parent component that is a symlink is rejected), and hard links must point at an entry
//! already inside the layer. Symlink *targets* are stored verbatim: they are resolved inside the
//! sandbox's root, never by us.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use filetime::FileTime;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use tar::EntryType;

use crate::error::{ImageError, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to treat a directory as opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What an unpack did, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries materialised (files, dirs, links, devices).
    pub entries: u64,
    /// `.wh.<name>` entries turned into overlayfs whiteout devices.
    pub whiteouts: u64,
    /// `.wh..wh..opq` entries turned into opaque directories.
    pub opaque_dirs: u64,
}

/// Unpacks an (uncompressed) layer tar stream into `dest`, which must exist and be empty.
pub fn unpack_layer(reader: impl Read, dest: &Path) -> Result<UnpackStats> {
    let mut archive = tar::Archive::new(reader);
    let mut unpacker = Unpacker {
        dest,
        known_dirs: HashSet::new(),
        dir_mtimes: Vec::new(),
        stats: UnpackStats::default(),
    };
    let entries = archive.entries().map_err(bad_tar)?;
    for entry in entries {
        let entry = entry.map_err(bad_tar)?;
        unpacker.entry(entry)?;
    }
    // Writing into a directory bumps its mtime, so directory times are set last.
    for (path, mtime) in unpacker.dir_mtimes.iter().rev() {
        filetime::set_symlink_file_times(path, *mtime, *mtime)
            .map_err(ImageError::io("set mtime of", path))?;
    }
    Ok(unpacker.stats)
}

fn bad_tar(e: io::Error) -> ImageError {
    ImageError::BadTar(e.to_string())
}

/// Turns a tar path into components below the layer root, or says why it is unsafe.
pub(crate) fn safe_components(raw: &Path) -> Result<Vec<OsString>> {
    let unsafe_path = |reason| ImageError::UnsafePath {
        path: raw.to_string_lossy().into_owned(),
        reason,
    };
    let mut out = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(name) => out.push(name.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_path("contains `..`")),
            Component::RootDir | Component::Prefix(_) => return Err(unsafe_path("absolute path")),
        }
    }
    Ok(out)
}

struct Unpacker<'a> {
    dest: &'a Path,
    /// Directories already checked to be real directories inside `dest`.
    known_dirs: HashSet<PathBuf>,
    dir_mtimes: Vec<(PathBuf, FileTime)>,
    stats: UnpackStats,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let raw_path = entry.path().map_err(bad_tar)?.into_owned();
        let mut comps = safe_components(&raw_path)?;
        let Some(name) = comps.pop() else {
            // The layer root itself (`./`): its attributes come from the sandbox, not the layer.
            return Ok(());
        };
        let parent = self.ensure_dir(&comps, &raw_path)?;

        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_MARKER.as_bytes() {
            xattr::set(&parent, OVERLAY_OPAQUE_XATTR, b"y")
                .map_err(ImageError::io("mark opaque", &parent))?;
            self.stats.opaque_dirs += 1;
            return Ok(());
        }
        if let Some(target) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if target.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                // Other `.wh..wh.` names are aufs bookkeeping (e.g. hard link dirs): not content.
                return Ok(());
            }
            if target.is_empty() || target == b"." || target == b".." {
                return Err(ImageError::UnsafePath {
                    path: raw_path.to_string_lossy().into_owned(),
                    reason: "whiteout of `.` or `..`",
                });
            }
            let path = parent.join(OsStr::from_bytes(target));
            // An entry of the same layer wins over its whiteout (OCI spec: whiteouts only hide
            // lower layers), so never replace something this layer put there.
            if fs::symlink_metadata(&path).is_err() {
                mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                    .map_err(|e| ImageError::io("create whiteout", &path)(e.into()))?;
                self.stats.whiteouts += 1;
            }
            return Ok(());
        }

        let path = parent.join(&name);
        let header = entry.header().clone();
        let mode = header.mode().map_err(bad_tar)? & 0o7777;
        let uid = header.uid().map_err(bad_tar)?;
        let gid = header.gid().map_err(bad_tar)?;
        let mtime = FileTime::from_unix_time(header.mtime().map_err(bad_tar)? as i64, 0);
        let xattrs = pax_xattrs(&mut entry)?;

        if kind.is_dir() {
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    remove_existing(&path)?;
                    fs::create_dir(&path).map_err(ImageError::io("create dir", &path))?;
                }
                Err(_) => fs::create_dir(&path).map_err(ImageError::io("create dir", &path))?,
            }
            self.known_dirs.insert(path.clone());
            set_owner_mode(&path, uid, gid, Some(mode))?;
            set_xattrs(&path, &xattrs)?;
            self.dir_mtimes.push((path, mtime));
            self.stats.entries += 1;
            return Ok(());
        }

        self.replace(&path)?;
        let mut set_mode = Some(mode);
        if kind.is_symlink() {
            let target = entry.link_name().map_err(bad_tar)?.ok_or_else(|| {
                ImageError::BadTar(format!("symlink {} has no target", raw_path.display()))
            })?;
            std::os::unix::fs::symlink(&target, &path).map_err(ImageError::io("symlink", &path))?;
            set_mode = None;
        } else if kind.is_hard_link() {
            let target = entry.link_name().map_err(bad_tar)?.ok_or_else(|| {
                ImageError::BadTar(format!("hard link {} has no target", raw_path.display()))
            })?;
            let source = self.hard_link_source(&target)?;
            fs::hard_link(&source, &path).map_err(ImageError::io("hard link", &path))?;
            // A hard link shares the inode: its attributes are the source's.
            self.stats.entries += 1;
            return Ok(());
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let sflag = if kind.is_fifo() {
                SFlag::S_IFIFO
            } else if kind.is_block_special() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFCHR
            };
            // FIFOs carry no device number, and some writers leave the fields blank.
            let (major, minor) = if kind.is_fifo() {
                (0, 0)
            } else {
                let major = header.device_major().map_err(bad_tar)?.unwrap_or(0);
                (major, header.device_minor().map_err(bad_tar)?.unwrap_or(0))
            };
            mknod(
                &path,
                sflag,
                Mode::empty(),
                makedev(major.into(), minor.into()),
            )
            .map_err(|e| ImageError::io("mknod", &path)(e.into()))?;
        } else {
            // Regular files, and (as POSIX asks) any type we do not recognise.
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(ImageError::io("create file", &path))?;
            io::copy(&mut entry, &mut file).map_err(ImageError::io("write file", &path))?;
        }
        set_owner_mode(&path, uid, gid, set_mode)?;
        if set_mode.is_some() {
            set_xattrs(&path, &xattrs)?;
        }
        filetime::set_symlink_file_times(&path, mtime, mtime)
            .map_err(ImageError::io("set mtime of", &path))?;
        self.stats.entries += 1;
        Ok(())
    }

    /// Makes sure every parent component is a real directory inside the layer, creating missing
    /// ones and refusing to pass through a symlink.
    fn ensure_dir(&mut self, comps: &[OsString], raw: &Path) -> Result<PathBuf> {
        let mut path = self.dest.to_path_buf();
        for c in comps {
            path.push(c);
            if self.known_dirs.contains(&path) {
                continue;
            }
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ImageError::UnsafePath {
                        path: raw.to_string_lossy().into_owned(),
                        reason: "a parent component is a symlink (would write outside the layer)",
                    })
                }
                Ok(m) if is_whiteout(&m) => {
                    fs::remove_file(&path).map_err(ImageError::io("remove whiteout", &path))?;
                    fs::create_dir(&path).map_err(ImageError::io("create dir", &path))?;
                }
                Ok(_) => {
                    return Err(ImageError::BadTar(format!(
                        "{}: a parent component is not a directory",
                        raw.display()
                    )))
                }
                Err(_) => {
                    fs::create_dir(&path).map_err(ImageError::io("create dir", &path))?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                        .map_err(ImageError::io("chmod", &path))?;
                }
            }
            self.known_dirs.insert(path.clone());
        }
        Ok(path)
    }

    /// Clears the way for a non-directory entry; later entries win, as in `tar -x`.
    fn replace(&mut self, path: &Path) -> Result<()> {
        if self.known_dirs.contains(path) {
            self.known_dirs.retain(|p| !p.starts_with(path));
            self.dir_mtimes.retain(|(p, _)| !p.starts_with(path));
        }
        if fs::symlink_metadata(path).is_ok() {
            remove_existing(path)?;
        }
        Ok(())
    }

    fn hard_link_source(&mut self, target: &Path) -> Result<PathBuf> {
        let mut comps = safe_components(target)?;
        let Some(name) = comps.pop() else {
            return Err(ImageError::UnsafePath {
                path: target.to_string_lossy().into_owned(),
                reason: "hard link to the layer root",
            });
        };
        let mut source = self.dest.to_path_buf();
        for c in &comps {
            source.push(c);
            let is_real_dir = fs::symlink_metadata(&source)
                .map(|m| m.is_dir())
                .unwrap_or(false);
            if !is_real_dir {
                return Err(ImageError::UnsafePath {
                    path: target.to_string_lossy().into_owned(),
                    reason: "hard link target is not inside the layer",
                });
            }
        }
        source.push(name);
        match fs::symlink_metadata(&source) {
            Ok(m) if !m.is_dir() => Ok(source),
            _ => Err(ImageError::UnsafePath {
                path: target.to_string_lossy().into_owned(),
                reason: "hard link target is not an earlier file of this layer",
            }),
        }
    }
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    m.file_type().is_char_device() && m.rdev() == 0
}

fn remove_existing(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(ImageError::io("stat", path))?;
    if meta.is_dir() {
        fs::remove_dir_all(path).map_err(ImageError::io("remove dir", path))
    } else {
        fs::remove_file(path).map_err(ImageError::io("remove", path))
    }
}

/// Owner first: `chown` clears set-uid bits, so the mode goes on after it.
fn set_owner_mode(path: &Path, uid: u64, gid: u64, mode: Option<u32>) -> Result<()> {
    let uid =
        u32::try_from(uid).map_err(|_| ImageError::BadTar(format!("uid {uid} out of range")))?;
    let gid =
        u32::try_from(gid).map_err(|_| ImageError::BadTar(format!("gid {gid} out of range")))?;
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(ImageError::io("chown", path))?;
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(ImageError::io("chmod", path))?;
    }
    Ok(())
}

/// `SCHILY.xattr.*` PAX records, minus overlayfs's own namespace: a layer must not be able to
/// forge whiteouts, redirects or metacopy markers for the overlay that will stack it.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(bad_tar)? {
        for ext in exts {
            let ext = ext.map_err(bad_tar)?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if !name.starts_with("trusted.overlay.") {
                    out.push((name.to_owned(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}

fn set_xattrs(path: &Path, xattrs: &[(String, Vec<u8>)]) -> Result<()> {
    for (name, value) in xattrs {
        xattr::set(path, name, value).map_err(ImageError::io("set xattr on", path))?;
    }
    Ok(())
}
