//! [`build_swebench_images`]: the environment images the SWE-bench harness would build for a
//! set of records, from Debian and PyPI, as three kinds of layered images:
//!
//! - **base** `swebench/base:<suite>-<key>`: debootstrap of the Debian release whose `python3`
//!   is the spec's Python (bullseye 3.9, bookworm 3.11), with git and patch. Shared by every
//!   environment on that release.
//! - **environment** `swebench/env/<owner>__<name>:<key>`: base + a layer holding the
//!   virtualenv `/opt/venv` with the spec's packages (a requirements file read from the
//!   repository at the environment setup commit, conda package names, `pip_packages`). Its
//!   `Env` puts `/opt/venv/bin` first on `PATH` (and sets `VIRTUAL_ENV`): that is the whole
//!   activation. Shared by the instances of one repository version (and of other versions
//!   whose installs are identical); `<key>` hashes every input, so a changed spec is a new
//!   image and an unchanged one is never rebuilt.
//! - **instance** `<dataset>/sample/<instance_id>:1` (what sessions use, see
//!   `kiln_services::sessions::session_image`): environment + a layer with the repository at
//!   its base commit in `/testbed` and what the spec's `pre_install` and `install` commands
//!   wrote (an editable install's links in site-packages, `*.egg-info`).
//!
//! Steps run as root in a chroot over overlayfs (see `chroot`), with the host's network for
//! pip and a shared pip cache (`<cache_dir>/pip`). Environments, then instances, are built
//! `jobs` at a time.

mod chroot;
mod layers;
mod requirements;
mod specs;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use kiln_image::{Image, ImageStore, Reference};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

pub use specs::{debian_suite_for_python, RepoSpecs, SpecTable, VersionSpec};

use crate::base_image::{build_base_image, existing};
use crate::build_progress::{BuildEvent, BuildProgress};
use crate::demo_dataset::sample_reference;
use crate::error::{EnvImageError, Result};
use crate::image_spec::{default_env, BuildOptions, ImageSpec};
use crate::sample_image::{check_out, BASE_COMMIT_LABEL};
use layers::{build_layer, LayerStep};

/// Label with the hash of everything an environment or instance layer was built from.
pub const INPUTS_LABEL: &str = "org.kiln.swebench.inputs";
/// Where the environment lives inside the images.
pub const VENV: &str = "/opt/venv";
/// Bumped when the recipe below changes, so layers built the old way are rebuilt.
const RECIPE_VERSION: u32 = 1;
/// Debian packages of every base: the interpreter (its venv module), and what the harness's
/// setup and evaluation scripts call.
const BASE_PACKAGES: [&str; 5] = ["ca-certificates", "git", "patch", "python3", "python3-venv"];

/// The fields of a SWE-bench record that its image depends on.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct SwebenchRecord {
    pub instance_id: String,
    pub repo: String,
    pub base_commit: String,
    pub version: String,
    #[serde(default)]
    pub environment_setup_commit: Option<String>,
}

/// Reads records from a JSON array or JSON lines file (other fields are ignored).
pub fn read_records(path: &Path) -> Result<Vec<SwebenchRecord>> {
    let text = fs::read_to_string(path).map_err(EnvImageError::io("read", path))?;
    let json_err = |what: String| move |source| EnvImageError::Json { what, source };
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text).map_err(json_err(path.display().to_string()));
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l).map_err(json_err(format!("{}:{}", path.display(), n + 1)))
        })
        .collect()
}

/// The git bundle (or directory) of `repo` (`owner/name`) in `repos_dir`, under the names
/// `kiln datasets import --repos` accepts.
pub fn find_repository(repos_dir: &Path, repo: &str) -> Result<PathBuf> {
    let (owner, name) = repo
        .split_once('/')
        .filter(|(o, n)| valid_part(o) && valid_part(n))
        .ok_or_else(|| EnvImageError::invalid("repo", format!("{repo:?} is not owner/name")))?;
    let candidates = [
        format!("{owner}/{name}.bundle"),
        format!("{owner}__{name}.bundle"),
        format!("{name}.bundle"),
        format!("{owner}/{name}"),
    ];
    candidates
        .iter()
        .map(|c| repos_dir.join(c))
        .find(|p| p.exists())
        .ok_or_else(|| {
            EnvImageError::invalid(
                "repository",
                format!("none of {candidates:?} is in {}", repos_dir.display()),
            )
        })
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// What [`build_swebench_images`] stored, by reference / instance id.
#[derive(Clone, Debug, Default)]
pub struct SwebenchImages {
    pub bases: BTreeMap<String, Image>,
    pub environments: BTreeMap<String, Image>,
    pub samples: BTreeMap<String, Image>,
}

/// What to build.
pub struct SwebenchBuild<'a> {
    pub records: &'a [SwebenchRecord],
    pub specs: &'a SpecTable,
    /// Names the instance images: `<dataset>/sample/<instance_id>:1`.
    pub dataset: &'a str,
    /// Holds the records' repositories (see [`find_repository`]).
    pub repos_dir: &'a Path,
    /// Images built at the same time.
    pub jobs: usize,
}

/// One environment to build: its image reference, inputs and the records that use it.
struct EnvPlan {
    reference: String,
    suite: &'static str,
    install_script: String,
    inputs: String,
    records: Vec<usize>,
}

/// Builds the base, environment and instance images of `build.records` (see the module
/// docs). Images already in the store with the same inputs are kept.
pub fn build_swebench_images(
    build: &SwebenchBuild<'_>,
    store: &ImageStore,
    options: &BuildOptions,
    progress: &BuildProgress,
) -> Result<SwebenchImages> {
    let scratch = crate::base_image::scratch_dir(options)?;
    let repos = clone_repositories(build, scratch.path())?;
    let plans = plan_environments(build, &repos)?;
    let mut images = SwebenchImages::default();
    for suite in plans
        .values()
        .map(|p| p.suite)
        .collect::<std::collections::BTreeSet<_>>()
    {
        let spec = base_spec(suite);
        images.bases.insert(
            suite.to_owned(),
            build_base_image(&spec, store, options, progress)?,
        );
    }
    let plans: Vec<EnvPlan> = plans.into_values().collect();
    let envs = run_parallel(build.jobs, &plans, |plan| {
        let base = images
            .bases
            .get(plan.suite)
            .ok_or_else(|| EnvImageError::invalid("base", plan.suite.to_owned()))?;
        build_environment(plan, base, store, options, progress)
    })?;
    let mut jobs = Vec::new();
    for (plan, env) in plans.iter().zip(&envs) {
        images
            .environments
            .insert(plan.reference.clone(), env.clone());
        jobs.extend(plan.records.iter().map(|&i| (i, env)));
    }
    let samples = run_parallel(build.jobs, &jobs, |&(i, env)| {
        let record = &build.records[i];
        let repo = repos
            .get(&record.repo)
            .ok_or_else(|| EnvImageError::invalid("repo", record.repo.clone()))?;
        let (_, spec) = build.specs.get(&record.repo, &record.version)?;
        build_instance(
            build.dataset,
            record,
            spec,
            env,
            repo,
            store,
            options,
            progress,
        )
    })?;
    for ((i, _), image) in jobs.iter().zip(samples) {
        images
            .samples
            .insert(build.records[*i].instance_id.clone(), image);
    }
    Ok(images)
}

/// One bare clone per repository (a bundle cannot be read with `git show`).
fn clone_repositories(
    build: &SwebenchBuild<'_>,
    scratch: &Path,
) -> Result<BTreeMap<String, PathBuf>> {
    let mut repos = BTreeMap::new();
    for record in build.records {
        if repos.contains_key(&record.repo) {
            continue;
        }
        let source = find_repository(build.repos_dir, &record.repo)?;
        let dest = scratch.join(format!("{}.git", repos.len()));
        kiln_git::Git::new()
            .args(["clone", "--quiet", "--bare", "--template="])
            .arg(&source)
            .arg(&dest)
            .allow_file_protocol()
            .output()?;
        repos.insert(record.repo.clone(), dest);
    }
    Ok(repos)
}

fn base_spec(suite: &str) -> ImageSpec {
    let mut spec = ImageSpec::new("swebench/base:x", &BASE_PACKAGES);
    spec.suite = suite.to_owned();
    spec.reference = format!("swebench/base:{suite}-{}", spec.rootfs_key());
    spec
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Groups the records by environment (repository, version and everything installed).
fn plan_environments(
    build: &SwebenchBuild<'_>,
    repos: &BTreeMap<String, PathBuf>,
) -> Result<BTreeMap<String, EnvPlan>> {
    let mut plans: BTreeMap<String, EnvPlan> = BTreeMap::new();
    for (i, record) in build.records.iter().enumerate() {
        let context = |e: EnvImageError| {
            EnvImageError::invalid("record", format!("{}: {e}", record.instance_id))
        };
        let (repo_specs, spec) = build
            .specs
            .get(&record.repo, &record.version)
            .map_err(context)?;
        let suite = debian_suite_for_python(&spec.python).map_err(context)?;
        let requirements = match spec.packages.as_deref() {
            Some("requirements.txt") => {
                let repo = repos
                    .get(&record.repo)
                    .ok_or_else(|| EnvImageError::invalid("repo", record.repo.clone()))?;
                let commit = record
                    .environment_setup_commit
                    .as_deref()
                    .unwrap_or(&record.base_commit);
                Some(
                    requirements::requirements_text(repo, commit, &repo_specs.requirements_paths)
                        .map_err(context)?,
                )
            }
            Some("environment.yml") => {
                return Err(context(EnvImageError::invalid(
                    "packages",
                    "environment.yml (conda) specs are not supported".to_owned(),
                )))
            }
            _ => None,
        };
        let install_script = env_script(spec, requirements.as_deref());
        let inputs = format!(
            "{RECIPE_VERSION}\n{}\n{install_script}",
            base_spec(suite).reference
        );
        let key = &sha256_hex(&inputs)[..16];
        let name = record.repo.replace('/', "__").to_ascii_lowercase();
        // No version in the name: versions whose installs are identical share the image.
        let reference = format!("swebench/env/{name}:{key}");
        Reference::parse(&reference).map_err(|e| context(e.into()))?;
        plans
            .entry(reference.clone())
            .or_insert_with(|| EnvPlan {
                reference,
                suite,
                install_script,
                inputs,
                records: Vec::new(),
            })
            .records
            .push(i);
    }
    Ok(plans)
}

/// The harness's environment script, with a virtualenv where it has a conda environment.
/// Conda would also bring its pip, setuptools and wheel: so do we (the versions of when the
/// harness's images were built).
fn env_script(spec: &VersionSpec, requirements: Option<&str>) -> String {
    let mut lines = vec![
        format!("python3 -m venv {VENV}"),
        // What a conda env made when the harness's images were (mid-2024) brings. Newer pip
        // (25.3) dropped the `setup.py develop` fallback that editable installs of
        // projects pinning setuptools < 64 need (pylint 2.15).
        "python -m pip install 'pip==24.2' 'setuptools==72.1.0' wheel".to_owned(),
    ];
    if let Some(text) = requirements {
        lines.push(format!(
            "cat > /tmp/requirements.txt <<'EOF_59812759871'\n{text}\nEOF_59812759871"
        ));
        lines.push("python -m pip install -r /tmp/requirements.txt".to_owned());
    } else if let Some(packages) = spec.packages.as_deref().filter(|p| !p.trim().is_empty()) {
        lines.push(format!("python -m pip install {packages}"));
    }
    if !spec.pip_packages.is_empty() {
        let quoted: Vec<String> = spec.pip_packages.iter().map(|p| shell_quote(p)).collect();
        lines.push(format!("python -m pip install {}", quoted.join(" ")));
    }
    lines.join("\n")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `Env` of environment and instance images: the virtualenv first on `PATH`.
fn image_env() -> Vec<String> {
    default_env()
        .into_iter()
        .map(|e| match e.strip_prefix("PATH=") {
            Some(path) => format!("PATH={VENV}/bin:{path}"),
            None => e,
        })
        .chain([format!("VIRTUAL_ENV={VENV}")])
        .collect()
}

/// The environment of build steps: the image's, plus pip's settings.
fn step_env(options: &BuildOptions) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = image_env()
        .into_iter()
        .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    env.extend(
        [
            ("HOME", "/root".to_owned()),
            ("PIP_CACHE_DIR", chroot::PIP_CACHE_IN_STEP.to_owned()),
            ("PIP_DISABLE_PIP_VERSION_CHECK", "1".to_owned()),
            ("PIP_NO_INPUT", "1".to_owned()),
            ("PIP_ROOT_USER_ACTION", "ignore".to_owned()),
            // Hash-checked .pyc files: valid whatever the mtimes in the layer are.
            ("SOURCE_DATE_EPOCH", options.mtime_clamp.to_string()),
            ("DEBIAN_FRONTEND", "noninteractive".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    if Path::new(chroot::HOST_CA).is_file() {
        for key in ["PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"] {
            env.push((key.to_owned(), chroot::HOST_CA_IN_STEP.to_owned()));
        }
    }
    env
}

fn up_to_date(
    store: &ImageStore,
    reference: &str,
    inputs: &str,
    force: bool,
) -> Result<Option<Image>> {
    if force {
        return Ok(None);
    }
    Ok(existing(store, reference)?.filter(|image| {
        image.config().labels.get(INPUTS_LABEL).map(String::as_str) == Some(inputs)
    }))
}

fn build_environment(
    plan: &EnvPlan,
    base: &Image,
    store: &ImageStore,
    options: &BuildOptions,
    progress: &BuildProgress,
) -> Result<Image> {
    let inputs = sha256_hex(&plan.inputs);
    if let Some(image) = up_to_date(store, &plan.reference, &inputs, options.force)? {
        progress.emit(BuildEvent::AlreadyBuilt {
            reference: plan.reference.clone(),
        });
        return Ok(image);
    }
    let env = step_env(options);
    build_layer(
        &LayerStep {
            parent: base,
            reference: &plan.reference,
            prepare: &|_| Ok(()),
            script: &plan.install_script,
            cwd: "/",
            env: &env,
            image_env: image_env(),
            working_dir: None,
            labels: BTreeMap::from([(INPUTS_LABEL.to_owned(), inputs)]),
            created_by: format!("swebench environment: {}", plan.install_script),
        },
        store,
        options,
        progress,
    )
}

#[allow(clippy::too_many_arguments)]
fn build_instance(
    dataset: &str,
    record: &SwebenchRecord,
    spec: &VersionSpec,
    env_image: &Image,
    repo: &Path,
    store: &ImageStore,
    options: &BuildOptions,
    progress: &BuildProgress,
) -> Result<Image> {
    let reference = sample_reference(dataset, &record.instance_id)?;
    let mut script: Vec<String> = spec.pre_install.clone();
    script.extend(spec.install.clone());
    let script = if script.is_empty() {
        "true".to_owned()
    } else {
        script.join("\n")
    };
    // The nearest tag is an input too: setuptools_scm makes the installed version from it.
    let described = kiln_git::Git::new()
        .arg("-C")
        .arg(repo)
        .args(["describe", "--tags", "--always", &record.base_commit])
        .output()?;
    let inputs = sha256_hex(&format!(
        "{RECIPE_VERSION}\n{}\n{}\n{}\n{script}",
        env_image.manifest_digest(),
        record.base_commit,
        String::from_utf8_lossy(&described.stdout).trim()
    ));
    if let Some(image) = up_to_date(store, &reference, &inputs, options.force)? {
        progress.emit(BuildEvent::AlreadyBuilt { reference });
        return Ok(image);
    }
    let env = step_env(options);
    let log_ref = reference.clone();
    let prepare = |upper: &Path| {
        check_out(repo, &record.base_commit, &upper.join("testbed"), |line| {
            progress.emit(BuildEvent::Log {
                reference: log_ref.clone(),
                line: line.to_owned(),
            })
        })
    };
    build_layer(
        &LayerStep {
            parent: env_image,
            reference: &reference,
            prepare: &prepare,
            script: &script,
            cwd: "/testbed",
            env: &env,
            image_env: image_env(),
            working_dir: Some("/testbed"),
            labels: BTreeMap::from([
                (INPUTS_LABEL.to_owned(), inputs),
                (BASE_COMMIT_LABEL.to_owned(), record.base_commit.clone()),
            ]),
            created_by: format!("git checkout {} in /testbed; {script}", record.base_commit),
        },
        store,
        options,
        progress,
    )
}

/// Runs `f` on every item, `jobs` at a time; results in the items' order; the first error
/// (after the running ones finish) fails the whole.
fn run_parallel<T: Sync, R: Send>(
    jobs: usize,
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<R>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let result = f(item);
                let failed = result.is_err();
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
                if failed {
                    // Let the others finish what they hold, start nothing new.
                    next.store(items.len(), Ordering::Relaxed);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::with_capacity(items.len());
    for result in results {
        match result {
            Some(r) => out.push(r?),
            None => {
                return Err(EnvImageError::invalid(
                    "build",
                    "stopped after an earlier failure".to_owned(),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references_and_scripts() {
        let table = SpecTable::builtin().unwrap();
        let (_, spec) = table.get("pytest-dev/pytest", "5.4").unwrap();
        let script = env_script(spec, None);
        assert!(script.starts_with("python3 -m venv /opt/venv\n"));
        assert!(script.contains("'pluggy==0.13.1'"));
        let (_, requests) = table.get("psf/requests", "2.4").unwrap();
        assert!(env_script(requests, None).contains("python -m pip install pytest"));
        let env = image_env();
        assert!(env[0].starts_with("PATH=/opt/venv/bin:/usr/local/sbin"));
        assert!(env.contains(&"VIRTUAL_ENV=/opt/venv".to_owned()));
        Reference::parse("swebench/env/pytest-dev__pytest:0123456789abcdef").unwrap();
        Reference::parse(&base_spec("bullseye").reference).unwrap();
    }

    #[test]
    fn reads_the_fixture_and_finds_its_repositories() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/swebench-fixture");
        let records = read_records(&dir.join("samples.jsonl")).unwrap();
        assert!(records.len() >= 10);
        let table = SpecTable::builtin().unwrap();
        let mut repos = std::collections::BTreeSet::new();
        for r in &records {
            let (_, spec) = table.get(&r.repo, &r.version).unwrap();
            debian_suite_for_python(&spec.python).unwrap();
            assert!(find_repository(&dir.join("repos"), &r.repo)
                .unwrap()
                .is_file());
            repos.insert(r.repo.clone());
        }
        assert!(repos.len() >= 4);
        assert!(find_repository(&dir, "../x").is_err());
    }

    #[test]
    fn parallel_runs_keep_order_and_report_errors() {
        let items: Vec<u32> = (0..20).collect();
        let out = run_parallel(3, &items, |i| Ok(i * 2)).unwrap();
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let err = run_parallel(2, &items, |&i| {
            if i == 5 {
                Err(EnvImageError::invalid("x", "five".to_owned()))
            } else {
                Ok(i)
            }
        });
        assert!(err.is_err());
        assert!(run_parallel(4, &[] as &[u32], |&i| Ok(i))
            .unwrap()
            .is_empty());
    }
}
