//! [`build_sample_layer`]: a base image plus one layer holding a sample's repository at its
//! base commit under `/testbed`.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use kiln_git::{Git, GitOutput};
use kiln_image::{Image, ImageStore};
use serde_json::{json, Value};

use crate::base_image::{existing, import_layout, pack_layer, scratch_dir};
use crate::build_progress::{BuildEvent, BuildPhase, BuildProgress};
use crate::error::{EnvImageError, Result};
use crate::image_spec::BuildOptions;
use crate::layer_tar::LayerTarOptions;
use crate::oci_layout::{LayerBlob, OciLayout};

/// Config label holding the commit checked out in `/testbed`.
pub const BASE_COMMIT_LABEL: &str = "org.kiln.sample.base_commit";
/// Config label holding the reference of the image the sample layer sits on.
pub const BASE_IMAGE_LABEL: &str = "org.kiln.sample.base_image";

/// Where the repository goes, inside the image.
const TESTBED: &str = "testbed";

/// Deadline of each git command of a checkout (a large repository from a local bundle).
const GIT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Stores `base` + a layer with `repo_bundle` (a `git bundle`, or any repository `git clone`
/// accepts) checked out at `base_commit` in `/testbed`, under `reference`.
///
/// The checkout keeps its `.git` (so `git diff` shows an agent's changes) but drops what
/// would differ between two builds: the remote pointing at the bundle, reflogs, and the
/// index's stat data (git refreshes it on first use). So the layer's digest depends only on
/// the repository and the commit.
///
/// Skipped when `reference` already holds exactly this: `base`'s layers plus one, and the
/// same base commit (unless [`BuildOptions::force`]).
pub fn build_sample_layer(
    base: &Image,
    repo_bundle: &Path,
    base_commit: &str,
    reference: &str,
    store: &ImageStore,
    options: &BuildOptions,
    progress: &BuildProgress,
) -> Result<Image> {
    if !options.force {
        if let Some(image) = existing(store, reference)? {
            if is_current(&image, base, base_commit) {
                progress.emit(BuildEvent::AlreadyBuilt {
                    reference: reference.to_owned(),
                });
                return Ok(image);
            }
        }
    }
    let started = Instant::now();
    progress.emit(BuildEvent::Started {
        reference: reference.to_owned(),
    });
    let work = scratch_dir(options)?;
    let tree = work.path().join("tree");
    let checkout = tree.join(TESTBED);
    fs::create_dir_all(&tree).map_err(EnvImageError::io("create", &tree))?;
    progress.phase(reference, BuildPhase::Checkout);
    check_out(repo_bundle, base_commit, &checkout, |line| {
        progress.emit(BuildEvent::Log {
            reference: reference.to_owned(),
            line: line.to_owned(),
        });
    })?;

    let layout = OciLayout::create(&work.path().join("layout"))?;
    let blobs_dir = store.root().join("blobs/sha256");
    for layer in base.layers() {
        layout.link_blob(
            &blobs_dir.join(layer.digest.hex()),
            &layer.digest.to_string(),
        )?;
    }
    let tar_options = LayerTarOptions {
        mtime_clamp: options.mtime_clamp,
        // Whoever ran the build, the files in the image belong to root.
        owner: Some((0, 0)),
    };
    let layer = pack_layer(&layout, &tree, &tar_options, options, reference, progress)?;
    let base_config = read_base_config(store, base)?;
    let config = sample_config(base_config, base, base_commit, &layer)?;
    let mut layers: Vec<LayerBlob> = base
        .layers()
        .iter()
        .map(|l| LayerBlob {
            digest: l.digest.to_string(),
            diff_id: l.diff_id.to_string(),
            size: l.size,
            media_type: l.media_type.clone(),
        })
        .collect();
    layers.push(layer.clone());
    layout.finish(&config, &layers, reference)?;
    let image = import_layout(store, &layout, reference, progress)?;
    progress.emit(BuildEvent::Finished {
        reference: reference.to_owned(),
        layer_bytes: layer.size,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(image)
}

fn is_current(image: &Image, base: &Image, base_commit: &str) -> bool {
    let (have, want) = (image.layers(), base.layers());
    have.len() == want.len() + 1
        && have.iter().zip(want).all(|(a, b)| a.diff_id == b.diff_id)
        && image
            .config()
            .labels
            .get(BASE_COMMIT_LABEL)
            .map(String::as_str)
            == Some(base_commit)
}

/// git ([`kiln_git`]: no caller's configuration, hooks or prompts), with the settings that
/// make the checkout the same on every host (a caller's `core.autocrlf` or default branch
/// would change it). The repository is a local bundle or directory: the `file` transport
/// is allowed.
fn git() -> Git {
    Git::new()
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
        ])
        .allow_file_protocol()
        .timeout(GIT_TIMEOUT)
}

/// Runs `git`, then hands each line it printed to `on_line` (the build's log).
fn git_logged(git: Git, on_line: &mut impl FnMut(&str)) -> Result<GitOutput> {
    let out = git.output()?;
    for stream in [&out.stdout, &out.stderr] {
        for line in String::from_utf8_lossy(stream).lines() {
            on_line(line);
        }
    }
    Ok(out)
}

/// Clones `repo` into `dest` at `commit` and strips the build-specific parts of `.git`.
pub(crate) fn check_out(
    repo: &Path,
    commit: &str,
    dest: &Path,
    mut on_line: impl FnMut(&str),
) -> Result<()> {
    if !commit.bytes().all(|b| b.is_ascii_hexdigit()) || commit.len() < 7 {
        return Err(EnvImageError::invalid(
            "base_commit",
            format!("{commit:?} is not a commit hash"),
        ));
    }
    // No template: hooks and samples would come from the build host's git.
    let clone = git()
        .args(["clone", "--quiet", "--no-checkout", "--template="])
        .arg(repo)
        .arg(dest);
    git_logged(clone, &mut on_line)?;
    let reset = git()
        .arg("-C")
        .arg(dest)
        .args(["reset", "--quiet", "--hard", commit]);
    git_logged(reset, &mut on_line)?;
    let head = git()
        .arg("-C")
        .arg(dest)
        .args(["rev-parse", "HEAD"])
        .output()?;
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    if !head.starts_with(&commit.to_ascii_lowercase()) {
        return Err(EnvImageError::invalid(
            "checkout",
            format!("HEAD is {head}, expected {commit}"),
        ));
    }
    let remote = git()
        .arg("-C")
        .arg(dest)
        .args(["remote", "remove", "origin"]);
    git_logged(remote, &mut on_line)?;
    let dot_git = dest.join(".git");
    let logs = dot_git.join("logs");
    if logs.exists() {
        fs::remove_dir_all(&logs).map_err(EnvImageError::io("remove", &logs))?;
    }
    for name in ["ORIG_HEAD", "FETCH_HEAD", "index"] {
        let path = dot_git.join(name);
        if path.exists() {
            fs::remove_file(&path).map_err(EnvImageError::io("remove", &path))?;
        }
    }
    // An index without stat data: the same bytes on every build.
    let read_tree = git().arg("-C").arg(dest).args(["read-tree", "HEAD"]);
    git_logged(read_tree, &mut on_line).map(|_| ())
}

fn read_base_config(store: &ImageStore, base: &Image) -> Result<Value> {
    let path = store
        .root()
        .join("blobs/sha256")
        .join(base.config_digest().hex());
    let bytes = fs::read(&path).map_err(EnvImageError::io("read", &path))?;
    serde_json::from_slice(&bytes).map_err(|source| EnvImageError::Json {
        what: format!("config of {}", base.reference()),
        source,
    })
}

/// The base config with the new layer's diff_id, a history entry and the sample labels.
fn sample_config(
    mut config: Value,
    base: &Image,
    commit: &str,
    layer: &LayerBlob,
) -> Result<Value> {
    let malformed = |what: &str| {
        EnvImageError::invalid("base image config", format!("{}: {what}", base.reference()))
    };
    let obj = config
        .as_object_mut()
        .ok_or_else(|| malformed("not an object"))?;
    let diff_ids = obj
        .get_mut("rootfs")
        .and_then(|r| r.get_mut("diff_ids"))
        .and_then(Value::as_array_mut)
        .ok_or_else(|| malformed("no rootfs.diff_ids"))?;
    diff_ids.push(json!(layer.diff_id));
    let history = obj.entry("history").or_insert_with(|| json!([]));
    if let Some(history) = history.as_array_mut() {
        history.push(json!({ "created_by": format!("git checkout {commit} in /{TESTBED}") }));
    }
    let inner = obj.entry("config").or_insert_with(|| json!({}));
    let inner = inner
        .as_object_mut()
        .ok_or_else(|| malformed("config is not an object"))?;
    inner.insert("WorkingDir".into(), json!(format!("/{TESTBED}")));
    let labels = inner.entry("Labels").or_insert_with(|| json!({}));
    if labels.is_null() {
        *labels = json!({});
    }
    let labels = labels
        .as_object_mut()
        .ok_or_else(|| malformed("Labels is not an object"))?;
    labels.insert(BASE_COMMIT_LABEL.into(), json!(commit));
    labels.insert(BASE_IMAGE_LABEL.into(), json!(base.reference()));
    Ok(config)
}
