//! Packs a directory tree into a layer tar whose bytes depend only on the tree's content.
//!
//! Determinism is what makes a rebuild from the cached root filesystem yield the same layer
//! digest, so the store sees "already unpacked" instead of a new 400 MB layer. The bytes are
//! fixed by: entries in byte order of their paths, parents before children; mtimes clamped to
//! one instant; no user or group names; hard links pointing at the first path (in that order)
//! of their inode; extended attributes in name order.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{EnvImageError, Result};

/// The default mtime clamp: 2025-01-01T00:00:00Z. Files newer than this (everything created
/// while building) get this mtime; package files keep their older, reproducible ones, which
/// keeps Python's timestamp-checked `.pyc` files valid.
pub const DEFAULT_MTIME_CLAMP: u64 = 1_735_689_600;

/// How a tree is turned into a layer.
#[derive(Clone, Debug)]
pub struct LayerTarOptions {
    /// Later mtimes are replaced by this one (seconds since the epoch).
    pub mtime_clamp: u64,
    /// Record every entry with this uid and gid instead of the owner on disk (for trees that
    /// a possibly unprivileged builder created, such as a repository checkout).
    pub owner: Option<(u64, u64)>,
}

impl Default for LayerTarOptions {
    fn default() -> Self {
        Self {
            mtime_clamp: DEFAULT_MTIME_CLAMP,
            owner: None,
        }
    }
}

/// What went into a layer tar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackStats {
    /// Tar entries written (directories, files, links, …).
    pub entries: u64,
    /// Bytes of regular file content.
    pub content_bytes: u64,
}

/// xattrs that describe the build host's filesystem rather than the image: overlayfs's own
/// (a layer must not smuggle whiteouts in) and SELinux labels.
fn keep_xattr(name: &[u8]) -> bool {
    !name.starts_with(b"trusted.overlay.") && !name.starts_with(b"security.selinux")
}

struct Entry {
    /// Path inside the layer, `/`-separated, no leading `./`.
    name: PathBuf,
    full: PathBuf,
    meta: Metadata,
}

/// Lists `root`'s tree (without `root` itself): each directory directly followed by its
/// contents, siblings in byte order of their names.
fn walk_sorted(root: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    walk_into(root, Path::new(""), &mut out)?;
    Ok(out)
}

fn walk_into(root: &Path, rel: &Path, out: &mut Vec<Entry>) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(EnvImageError::io("list", &dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(EnvImageError::io("list", &dir))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let name = rel.join(name);
        let full = root.join(&name);
        let meta = fs::symlink_metadata(&full).map_err(EnvImageError::io("stat", &full))?;
        let is_dir = meta.is_dir();
        out.push(Entry {
            name: name.clone(),
            full,
            meta,
        });
        if is_dir {
            walk_into(root, &name, out)?;
        }
    }
    Ok(())
}

/// Writes the tree under `root` (not `root` itself) as a tar to `out` and returns `out`.
/// `on_bytes(done, total)` reports file content written so far, after each file.
pub fn pack_tree<W: Write>(
    root: &Path,
    options: &LayerTarOptions,
    out: W,
    mut on_bytes: impl FnMut(u64, u64),
) -> Result<(W, PackStats)> {
    let entries = walk_sorted(root)?;
    let total: u64 = entries
        .iter()
        .filter(|e| e.meta.is_file())
        .map(|e| e.meta.len())
        .sum();
    let mut builder = tar::Builder::new(out);
    let mut stats = PackStats::default();
    // (dev, ino) → the layer path that first held the inode.
    let mut first_link: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let write_err = |path: &Path| EnvImageError::io("write layer entry for", path.to_owned());
    for entry in &entries {
        let meta = &entry.meta;
        let kind = meta.file_type();
        if kind.is_socket() {
            // Sockets belong to a running process; tar has no type for them.
            continue;
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        let (uid, gid) = options
            .owner
            .unwrap_or((u64::from(meta.uid()), u64::from(meta.gid())));
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_mtime(
            u64::try_from(meta.mtime())
                .unwrap_or(0)
                .min(options.mtime_clamp),
        );
        header.set_size(0);
        let xattrs = read_xattrs(&entry.full)?;
        if !xattrs.is_empty() {
            let records = xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
            builder
                .append_pax_extensions(records)
                .map_err(write_err(&entry.full))?;
        }
        let name = &entry.name;
        if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            builder
                .append_data(&mut header, name, io::empty())
                .map_err(write_err(&entry.full))?;
        } else if kind.is_symlink() {
            let target =
                fs::read_link(&entry.full).map_err(EnvImageError::io("read link", &entry.full))?;
            header.set_entry_type(tar::EntryType::Symlink);
            builder
                .append_link(&mut header, name, &target)
                .map_err(write_err(&entry.full))?;
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = first_link.get(&key) {
                    header.set_entry_type(tar::EntryType::Link);
                    builder
                        .append_link(&mut header, name, first)
                        .map_err(write_err(&entry.full))?;
                    stats.entries += 1;
                    continue;
                }
                first_link.insert(key, name.clone());
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let file = File::open(&entry.full).map_err(EnvImageError::io("open", &entry.full))?;
            let mut reader = CountingReader {
                inner: file.take(meta.len()),
                count: 0,
            };
            builder
                .append_data(&mut header, name, &mut reader)
                .map_err(write_err(&entry.full))?;
            if reader.count != meta.len() {
                // The header already promised `len` bytes: the tar would be corrupt.
                return Err(EnvImageError::invalid(
                    "layer source",
                    format!("{} changed size while being packed", entry.full.display()),
                ));
            }
            stats.content_bytes += meta.len();
            on_bytes(stats.content_bytes, total);
        } else {
            let entry_type = if kind.is_char_device() {
                tar::EntryType::Char
            } else if kind.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            };
            header.set_entry_type(entry_type);
            if entry_type != tar::EntryType::Fifo {
                let (major, minor) = dev_major_minor(meta.rdev());
                header
                    .set_device_major(major)
                    .and_then(|()| header.set_device_minor(minor))
                    .map_err(write_err(&entry.full))?;
            }
            builder
                .append_data(&mut header, name, io::empty())
                .map_err(write_err(&entry.full))?;
        }
        stats.entries += 1;
    }
    let out = builder
        .into_inner()
        .map_err(EnvImageError::io("finish layer tar for", root))?;
    Ok((out, stats))
}

/// Splits a Linux `dev_t` as glibc's `major()`/`minor()` do.
fn dev_major_minor(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & 0xffff_f000);
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xffff_ff00);
    (
        u32::try_from(major).unwrap_or(u32::MAX),
        u32::try_from(minor).unwrap_or(u32::MAX),
    )
}

/// The xattrs worth carrying, as `SCHILY.xattr.*` PAX records, sorted by name.
fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        // Filesystems without xattr support have none to carry.
        Err(e) if e.raw_os_error() == Some(95) => return Ok(Vec::new()),
        Err(e) => return Err(EnvImageError::io("list xattrs of", path)(e)),
    };
    let mut out = Vec::new();
    for name in names {
        let bytes = name.as_bytes();
        if !keep_xattr(bytes) {
            continue;
        }
        let Some(value) =
            xattr::get(path, &name).map_err(EnvImageError::io("read xattr of", path))?
        else {
            continue;
        };
        out.push((format!("SCHILY.xattr.{}", name.to_string_lossy()), value));
    }
    out.sort();
    Ok(out)
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_numbers_split_like_glibc() {
        // /dev/null is 1:3, /dev/tty 5:0; a large one exercises the high bits.
        assert_eq!(dev_major_minor(0x103), (1, 3));
        assert_eq!(dev_major_minor(0x500), (5, 0));
        let makedev = |major: u64, minor: u64| {
            (minor & 0xff)
                | ((major & 0xfff) << 8)
                | ((major & !0xfff) << 32)
                | ((minor & !0xff) << 12)
        };
        assert_eq!(
            dev_major_minor(makedev(0x123abc, 0x4567)),
            (0x123abc, 0x4567)
        );
    }
}

#[cfg(test)]
mod determinism_tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    const CLAMP: u64 = 1_700_000_000;

    fn set_mtime(path: &Path, secs: u64) {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    /// Builds the same tree, creating entries in the given order; mtimes of `now`-ish files
    /// differ between calls, old ones are pinned.
    fn make_tree(root: &Path, reverse: bool, content: &str) {
        use std::os::unix::fs::PermissionsExt;
        let mut steps: Vec<Box<dyn Fn()>> = vec![
            Box::new(|| fs::create_dir_all(root.join("usr/bin")).unwrap()),
            Box::new(|| fs::create_dir_all(root.join("etc/apt")).unwrap()),
            Box::new(|| fs::create_dir_all(root.join("a-dir")).unwrap()),
        ];
        if reverse {
            steps.reverse();
        }
        for s in &steps {
            s();
        }
        let mut files = vec![
            ("etc/apt/sources.list", "deb x"),
            ("usr/bin/tool", content),
            ("etc/hostname", "localhost\n"),
            ("a-dir/z", "zzz"),
            ("a-dir/a", "aaa"),
        ];
        if reverse {
            files.reverse();
        }
        for (name, text) in files {
            fs::write(root.join(name), text).unwrap();
        }
        fs::set_permissions(
            root.join("usr/bin/tool"),
            fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        std::os::unix::fs::symlink("tool", root.join("usr/bin/tool-link")).unwrap();
        fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-hard")).unwrap();
        xattr::set(root.join("etc/hostname"), "user.kiln", b"v").unwrap();
        // Old file: its mtime survives the clamp.
        set_mtime(&root.join("etc/apt/sources.list"), 1_600_000_000);
    }

    fn pack(root: &Path) -> Vec<u8> {
        let options = LayerTarOptions {
            mtime_clamp: CLAMP,
            owner: None,
        };
        pack_tree(root, &options, Vec::new(), |_, _| {}).unwrap().0
    }

    #[test]
    fn the_same_tree_built_in_another_order_packs_to_the_same_bytes() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        make_tree(a.path(), false, "#!/bin/sh\n");
        std::thread::sleep(Duration::from_millis(20));
        make_tree(b.path(), true, "#!/bin/sh\n");
        let bytes = pack(a.path());
        assert_eq!(bytes, pack(a.path()), "packing twice differs");
        assert_eq!(
            bytes,
            pack(b.path()),
            "creation order or time leaked into the tar"
        );

        let c = tempfile::tempdir().unwrap();
        make_tree(c.path(), false, "#!/bin/bash\n");
        assert_ne!(bytes, pack(c.path()), "content change not reflected");
    }

    #[test]
    fn entries_are_sorted_clamped_and_links_preserved() {
        let dir = tempfile::tempdir().unwrap();
        make_tree(dir.path(), true, "#!/bin/sh\n");
        let bytes = pack(dir.path());
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned();
            let header = entry.header().clone();
            match name.as_str() {
                "etc/apt/sources.list" => assert_eq!(header.mtime().unwrap(), 1_600_000_000),
                "usr/bin/tool" => {
                    assert_eq!(header.mode().unwrap(), 0o4755);
                    assert_eq!(header.mtime().unwrap(), CLAMP);
                }
                "usr/bin/tool-hard" => {
                    assert_eq!(header.entry_type(), tar::EntryType::Link);
                    assert_eq!(
                        entry.link_name().unwrap().unwrap(),
                        Path::new("usr/bin/tool")
                    );
                }
                "usr/bin/tool-link" => {
                    assert_eq!(header.entry_type(), tar::EntryType::Symlink);
                    assert_eq!(entry.link_name().unwrap().unwrap(), Path::new("tool"));
                }
                "etc/hostname" => {
                    let pax: Vec<(String, Vec<u8>)> = entry
                        .pax_extensions()
                        .unwrap()
                        .unwrap()
                        .map(|e| {
                            let e = e.unwrap();
                            (e.key().unwrap().to_owned(), e.value_bytes().to_vec())
                        })
                        .collect();
                    assert!(
                        pax.contains(&("SCHILY.xattr.user.kiln".into(), b"v".to_vec())),
                        "{pax:?}"
                    );
                }
                _ => {}
            }
            seen.push(name);
        }
        assert_eq!(
            seen,
            [
                "a-dir",
                "a-dir/a",
                "a-dir/z",
                "etc",
                "etc/apt",
                "etc/apt/sources.list",
                "etc/hostname",
                "usr",
                "usr/bin",
                "usr/bin/tool",
                "usr/bin/tool-hard",
                "usr/bin/tool-link",
            ]
        );
    }
}
