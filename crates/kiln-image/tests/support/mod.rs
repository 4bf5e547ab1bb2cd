//! Builders for layer tars, OCI layouts and `docker save` archives, written by hand so that
//! every digest in them is computed here, independently of the code under test.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

use serde_json::json;
use sha2::{Digest as _, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// One tar entry. Paths are written raw (no validation), so tests can build hostile tars.
pub enum Entry<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    /// path, data, mode, uid, gid, mtime
    Owned(&'a str, &'a [u8], u32, u64, u64, u64),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Fifo(&'a str),
}

fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    let name = &mut h.as_gnu_mut().expect("gnu header").name;
    assert!(path.len() < name.len(), "test paths must fit the header");
    name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h
}

fn set_link(h: &mut tar::Header, target: &str) {
    let link = &mut h.as_gnu_mut().expect("gnu header").linkname;
    link[..target.len()].copy_from_slice(target.as_bytes());
}

/// An uncompressed layer tar.
pub fn layer_tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (mut h, data): (tar::Header, &[u8]) = match e {
            Entry::Dir(p, mode) => (header(p, tar::EntryType::Directory, 0, *mode), &[]),
            Entry::File(p, data, mode) => (
                header(p, tar::EntryType::Regular, data.len() as u64, *mode),
                data,
            ),
            Entry::Owned(p, data, mode, uid, gid, mtime) => {
                let mut h = header(p, tar::EntryType::Regular, data.len() as u64, *mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_mtime(*mtime);
                (h, data)
            }
            Entry::Symlink(p, target) => {
                let mut h = header(p, tar::EntryType::Symlink, 0, 0o777);
                set_link(&mut h, target);
                (h, &[])
            }
            Entry::Hardlink(p, target) => {
                let mut h = header(p, tar::EntryType::Link, 0, 0o644);
                set_link(&mut h, target);
                (h, &[])
            }
            Entry::Fifo(p) => (header(p, tar::EntryType::Fifo, 0, 0o600), &[]),
        };
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("finish tar")
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

/// An image's blobs, with digests computed here.
pub struct TestImage {
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    /// Layer blobs as distributed (compressed or not), base first.
    pub layer_blobs: Vec<Vec<u8>>,
    pub diff_ids: Vec<String>,
}

impl TestImage {
    pub fn new(layers: &[Vec<u8>], compress: bool, env: &[&str], workdir: &str) -> Self {
        Self::with_media_types(layers, compress, env, workdir, false)
    }

    /// `docker_types`: Docker v2 schema2 media types instead of OCI's.
    pub fn with_media_types(
        layers: &[Vec<u8>],
        compress: bool,
        env: &[&str],
        workdir: &str,
        docker_types: bool,
    ) -> Self {
        let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Env": env, "WorkingDir": workdir, "Cmd": ["/bin/sh"], "User": "1000:1000" },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .expect("config json");
        let layer_blobs: Vec<Vec<u8>> = layers
            .iter()
            .map(|l| if compress { gzip(l) } else { l.clone() })
            .collect();
        let (manifest_type, config_type, layer_type) = match (docker_types, compress) {
            (true, _) => (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ),
            (false, true) => (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
            ),
            (false, false) => (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar",
            ),
        };
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": { "mediaType": config_type, "digest": digest(&config), "size": config.len() },
            "layers": layer_blobs.iter().map(|b| json!({
                "mediaType": layer_type, "digest": digest(b), "size": b.len()
            })).collect::<Vec<_>>(),
        }))
        .expect("manifest json");
        Self {
            config,
            manifest,
            layer_blobs,
            diff_ids,
        }
    }

    pub fn manifest_digest(&self) -> String {
        digest(&self.manifest)
    }
}

/// Writes an OCI image layout directory holding `images`, each annotated with a full
/// reference name.
pub fn write_oci_layout(dir: &Path, images: &[(&TestImage, &str)]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let put = |bytes: &[u8]| std::fs::write(blobs.join(sha256_hex(bytes)), bytes).expect("blob");
    let mut manifests = Vec::new();
    for (img, name) in images {
        put(&img.config);
        put(&img.manifest);
        for l in &img.layer_blobs {
            put(l);
        }
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": img.manifest_digest(),
            "size": img.manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": name },
        }));
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    let index = json!({ "schemaVersion": 2, "manifests": manifests });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("index");
}

/// Tars up a directory (paths relative to it).
pub fn tar_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).expect("create tar"));
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).expect("tar dir");
    b.finish().expect("finish");
}

/// Writes a `docker save` tarball. `legacy`: `<id>/layer.tar` and `<config hex>.json` (Docker
/// before 25, with the second use of a layer stored as a symlink, as Docker does); otherwise
/// Docker 25+'s `blobs/sha256/<hex>` layout. Layers are stored uncompressed, like Docker does.
pub fn docker_save_tar(out: &Path, images: &[(&TestImage, &[&str])], legacy: bool) {
    let mut b = tar::Builder::new(std::fs::File::create(out).expect("create"));
    let add = |b: &mut tar::Builder<std::fs::File>, path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).expect("append");
    };
    let mut written = std::collections::HashMap::<String, String>::new();
    let mut entries = Vec::new();
    for (img, tags) in images {
        let config_path = if legacy {
            format!("{}.json", sha256_hex(&img.config))
        } else {
            format!("blobs/sha256/{}", sha256_hex(&img.config))
        };
        add(&mut b, &config_path, &img.config);
        let mut layer_paths = Vec::new();
        for layer in &img.layer_blobs {
            let hex = sha256_hex(layer);
            let path = if legacy {
                // Docker names legacy layer dirs by a chain ID unrelated to the content digest.
                format!(
                    "{}/layer.tar",
                    sha256_hex(format!("id-{hex}-{}", layer_paths.len()).as_bytes())
                )
            } else {
                format!("blobs/sha256/{hex}")
            };
            match written.get(&hex) {
                Some(first) if legacy => {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_mode(0o777);
                    b.append_link(&mut h, &path, format!("../{first}"))
                        .expect("symlink");
                }
                Some(_) => {}
                None => {
                    add(&mut b, &path, layer);
                    written.insert(hex, path.clone());
                }
            }
            layer_paths.push(path);
        }
        entries.push(json!({ "Config": config_path, "RepoTags": tags, "Layers": layer_paths }));
    }
    add(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&entries).expect("json"),
    );
    b.finish().expect("finish");
}
