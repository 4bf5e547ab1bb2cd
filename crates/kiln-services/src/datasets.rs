//! Datasets and samples: importing SWE-bench-style records, listing, and the sample
//! archive that `GET /samples/{dataset}/{sample_id}/download` serves.
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use flate2::write::GzEncoder;
use flate2::Compression;
use kiln_store::{
    Dataset, ImportSummary, NewSample, Sample, SampleImport, SamplePage, SampleQuery, Store,
};

use crate::error::{ServiceError, ServiceResult};
use crate::records::{parse_records, RecordProblem};
use crate::repos::RepoStore;

const MAX_DATASET_NAME_LEN: usize = 64;

pub struct DatasetService {
    store: Arc<dyn Store>,
    repos: RepoStore,
}

/// What an import was asked to do.
pub struct ImportRequest<'a> {
    pub dataset: &'a str,
    pub description: Option<String>,
    pub version_description: Option<String>,
    /// The records file's text.
    pub text: &'a str,
    /// Where the records' repositories can be found (see [`find_repo_source`]); `None`
    /// imports records only, and their archives then hold the record alone.
    pub repos_dir: Option<&'a Path>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{} problem(s) in the records; nothing was imported", .0.len())]
    Records(Vec<RecordProblem>),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// The archive of one sample, ready to send.
pub struct SampleArchive {
    pub file_name: String,
    pub gzip: Vec<u8>,
    /// False when the server has no copy of the sample's repository.
    pub has_repository: bool,
}

impl DatasetService {
    pub fn new(store: Arc<dyn Store>, repos_root: PathBuf) -> Self {
        Self {
            store,
            repos: RepoStore::new(repos_root),
        }
    }

    /// Every dataset, private ones included (the server's own work and the CLI).
    pub async fn list_datasets(&self) -> ServiceResult<Vec<Dataset>> {
        Ok(self.store.list_datasets().await?)
    }

    /// The datasets the account `viewer` (the org a request acts in) may see: the public
    /// ones and its own private ones.
    pub async fn visible_datasets(&self, viewer: &str) -> ServiceResult<Vec<Dataset>> {
        let mut datasets = self.store.list_datasets().await?;
        datasets.retain(|d| d.visible_to(viewer));
        Ok(datasets)
    }

    /// Makes a dataset private to an account (an organization's), or public again.
    pub async fn set_owner(&self, name: &str, owner_user_id: Option<&str>) -> ServiceResult<()> {
        if self.store.set_dataset_owner(name, owner_user_id).await? {
            Ok(())
        } else {
            Err(ServiceError::not_found(format!("dataset {name}")))
        }
    }

    pub async fn dataset_exists(&self, name: &str) -> ServiceResult<bool> {
        Ok(self.store.get_dataset(name).await?.is_some())
    }

    pub async fn list_samples(&self, query: &SampleQuery) -> ServiceResult<SamplePage> {
        Ok(self.store.list_samples(query).await?)
    }

    /// A sample the account `viewer` may see; another org's private dataset is as absent
    /// as a missing one.
    pub async fn get_visible_sample(
        &self,
        viewer: &str,
        dataset: &str,
        sample_id: &str,
        version: Option<i64>,
    ) -> ServiceResult<Sample> {
        check_visible(self.store.as_ref(), viewer, dataset, sample_id).await?;
        self.get_sample(dataset, sample_id, version).await
    }

    /// A sample of any dataset (the server's own work: grading, forks, validation).
    pub async fn get_sample(
        &self,
        dataset: &str,
        sample_id: &str,
        version: Option<i64>,
    ) -> ServiceResult<Sample> {
        self.store
            .get_sample(dataset, sample_id, version)
            .await?
            .ok_or_else(|| {
                ServiceError::not_found(match version {
                    Some(v) => format!("sample {dataset}/{sample_id} version {v}"),
                    None => format!("sample {dataset}/{sample_id}"),
                })
            })
    }

    /// Validates every record and repository first, then writes all samples in one
    /// store transaction: a file with any problem changes nothing.
    pub async fn import(&self, request: ImportRequest<'_>) -> Result<ImportSummary, ImportError> {
        check_dataset_name(request.dataset).map_err(|reason| {
            ImportError::Records(vec![RecordProblem {
                location: "--name".into(),
                reason,
            }])
        })?;
        let samples = parse_records(request.text).map_err(ImportError::Records)?;
        if let Some(dir) = request.repos_dir {
            // git runs in other directories: a path relative to ours would mean nothing there.
            let dir = std::path::absolute(dir).map_err(|e| {
                ImportError::Records(vec![RecordProblem {
                    location: "--repos".into(),
                    reason: format!("cannot use {}: {e}", dir.display()),
                }])
            })?;
            self.import_repositories(&samples, &dir).await?;
        }
        let import = SampleImport {
            dataset: request.dataset.to_string(),
            description: request.description,
            version_description: request.version_description,
            samples,
            now: Utc::now(),
        };
        Ok(self
            .store
            .import_samples(&import)
            .await
            .map_err(ServiceError::from)?)
    }

    async fn import_repositories(
        &self,
        samples: &[NewSample],
        dir: &Path,
    ) -> Result<(), ImportError> {
        let repos: BTreeSet<&str> = samples.iter().map(|s| s.record.repo.as_str()).collect();
        let mut problems = Vec::new();
        for repo in repos {
            match find_repo_source(dir, repo) {
                Some(source) => {
                    if let Err(e) = self.repos.import(repo, &source).await {
                        // Named: which repository, from where, and which samples need it.
                        problems.push(RecordProblem {
                            location: format!("repo {repo}"),
                            reason: format!(
                                "cannot import {} (needed by {}): {}",
                                source.display(),
                                samples_of(samples, repo),
                                service_message(&e)
                            ),
                        });
                    }
                }
                None => problems.push(RecordProblem {
                    location: format!("repo {repo}"),
                    reason: format!(
                        "not found in {} (looked for {})",
                        dir.display(),
                        repo_candidates(repo).join(", ")
                    ),
                }),
            }
        }
        for (i, sample) in samples.iter().enumerate() {
            let record = &sample.record;
            let known = problems
                .iter()
                .any(|p| p.location == format!("repo {}", record.repo));
            if !known
                && !self
                    .repos
                    .has_commit(&record.repo, &record.base_commit)
                    .await?
            {
                problems.push(RecordProblem {
                    location: format!("sample {} ({})", i + 1, sample.sample_id),
                    reason: format!(
                        "base_commit {} is not in repository {}",
                        record.base_commit, record.repo
                    ),
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ImportError::Records(problems))
        }
    }

    /// A gzip'd tar holding `<root>/sample.json` (the sample as the API shows it, plus
    /// every field of its record) and `<root>/repo/` (the repository at base_commit).
    pub async fn archive(
        &self,
        sample: &Sample,
        sample_json: &serde_json::Value,
    ) -> ServiceResult<SampleArchive> {
        let root = format!("{}-v{}", sample.sample_id, sample.version);
        let has_repository = self
            .repos
            .has_commit(&sample.repo, &sample.base_commit)
            .await?;
        let repo_tar = if has_repository {
            Some(
                self.repos
                    .archive(&sample.repo, &sample.base_commit, &format!("{root}/repo/"))
                    .await?,
            )
        } else {
            None
        };
        let json = serde_json::to_vec_pretty(sample_json)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let mtime = sample.created_at.timestamp().max(0) as u64;
        let file_name = format!("{root}.tar.gz");
        let gzip = tokio::task::spawn_blocking(move || {
            build_archive(&root, &json, repo_tar.as_deref(), mtime)
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("archive task failed: {e}")))??;
        Ok(SampleArchive {
            file_name,
            gzip,
            has_repository,
        })
    }
}

fn build_archive(
    root: &str,
    sample_json: &[u8],
    repo_tar: Option<&[u8]>,
    mtime: u64,
) -> ServiceResult<Vec<u8>> {
    let fail = |e: std::io::Error| ServiceError::Internal(format!("cannot build archive: {e}"));
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    let mut header = tar::Header::new_gnu();
    header.set_size(sample_json.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, format!("{root}/sample.json"), sample_json)
        .map_err(fail)?;
    if let Some(repo_tar) = repo_tar {
        let mut archive = tar::Archive::new(repo_tar);
        for entry in archive.entries().map_err(fail)? {
            let mut entry = entry.map_err(fail)?;
            // git archive leads with a pax header carrying the commit id; keep only files.
            if matches!(
                entry.header().entry_type(),
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
            ) {
                continue;
            }
            let mut header = entry.header().clone();
            let path = entry.path().map_err(fail)?.into_owned();
            builder
                .append_data(&mut header, path, &mut entry)
                .map_err(fail)?;
        }
    }
    let mut gz = builder.into_inner().map_err(fail)?;
    gz.flush().map_err(fail)?;
    gz.finish().map_err(fail)
}

/// The places a repository `owner/name` may be found under an import's repos directory:
/// a bundle or a git directory, nested by owner or flattened SWE-bench style (`owner__name`).
pub fn repo_candidates(repo: &str) -> Vec<String> {
    let (owner, name) = repo.split_once('/').unwrap_or(("", repo));
    vec![
        format!("{owner}/{name}.bundle"),
        format!("{owner}__{name}.bundle"),
        format!("{name}.bundle"),
        format!("{owner}/{name}.git"),
        format!("{owner}/{name}"),
        format!("{owner}__{name}"),
        format!("{name}"),
    ]
}

/// "sample 1 (id), sample 3 (id)": the records that name `repo`, at most five.
fn samples_of(samples: &[NewSample], repo: &str) -> String {
    let named: Vec<String> = samples
        .iter()
        .enumerate()
        .filter(|(_, s)| s.record.repo == repo)
        .map(|(i, s)| format!("sample {} ({})", i + 1, s.sample_id))
        .collect();
    match named.len() {
        0..=5 => named.join(", "),
        n => format!("{} and {} more", named[..5].join(", "), n - 5),
    }
}

/// The text of an internal error without its "internal error:" framing.
fn service_message(e: &ServiceError) -> String {
    match e {
        ServiceError::Internal(message) => message.clone(),
        other => other.to_string(),
    }
}

fn find_repo_source(dir: &Path, repo: &str) -> Option<PathBuf> {
    repo_candidates(repo)
        .into_iter()
        .map(|c| dir.join(c))
        .find(|p| p.exists())
}

pub fn check_dataset_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_DATASET_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "dataset name {name:?} must be 1-{MAX_DATASET_NAME_LEN} characters of A-Z a-z 0-9 _ - ., starting with a letter or digit"
        ))
    }
}

/// Another org's private dataset is as absent as a missing one: a 404 naming the sample,
/// from one indexed lookup (no sample count), for every path a caller reaches samples by.
pub(crate) async fn check_visible(
    store: &dyn Store,
    viewer: &str,
    dataset: &str,
    sample_id: &str,
) -> ServiceResult<()> {
    match store.dataset_owner(dataset).await? {
        Some(Some(owner)) if owner != viewer => Err(ServiceError::not_found(format!(
            "sample {dataset}/{sample_id}"
        ))),
        _ => Ok(()),
    }
}
