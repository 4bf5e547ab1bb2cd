//! The result of a job as a gzip'd tar: `diff.patch`, `logs/stdout.log`,
//! `logs/stderr.log` and `job.json`. Written to a temporary name and renamed, so a
//! reader never sees half an archive.
use std::io::Write;
use std::path::PathBuf;

pub(super) async fn write(path: PathBuf, files: Vec<(String, Vec<u8>)>) -> Result<(), String> {
    tokio::task::spawn_blocking(move || write_blocking(&path, &files))
        .await
        .map_err(|e| format!("cannot write the result: {e}"))?
        .map_err(|e| format!("cannot write the result: {e}"))
}

fn write_blocking(path: &std::path::Path, files: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let file = std::fs::File::create(&tmp)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(now);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, data.as_slice())?;
    }
    let mut file = tar.into_inner()?.finish()?;
    file.flush()?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
