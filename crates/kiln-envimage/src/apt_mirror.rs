//! Finds the Debian mirror this host's apt uses, so debootstrap goes where the host's own
//! package downloads go (a proxy or local mirror on locked-down machines).

use std::fs;
use std::path::Path;

/// Used when the host's apt configuration names no Debian mirror.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// One `deb` source: its URIs and suites.
#[derive(Debug, PartialEq, Eq)]
struct Source {
    uris: Vec<String>,
    suites: Vec<String>,
}

/// The mirror for `suite` named in `/etc/apt` of this host, or [`DEFAULT_MIRROR`].
pub fn host_mirror(suite: &str) -> String {
    find_mirror(Path::new("/etc/apt"), suite).unwrap_or_else(|| DEFAULT_MIRROR.to_owned())
}

/// The mirror for `suite` in an apt configuration directory (`sources.list` and
/// `sources.list.d/*.list|*.sources`): the first `deb` source that lists `suite` itself (not
/// `suite-security` or `suite-updates`, which live in other archives), else the first `deb`
/// source whose URI does not look like a security archive.
pub fn find_mirror(etc_apt: &Path, suite: &str) -> Option<String> {
    let mut sources = Vec::new();
    if let Ok(text) = fs::read_to_string(etc_apt.join("sources.list")) {
        sources.extend(parse_one_line(&text));
    }
    let mut files: Vec<_> = fs::read_dir(etc_apt.join("sources.list.d"))
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    // apt reads the directory in name order; follow it so "first" means the same thing.
    files.sort();
    for path in files {
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("list") => sources.extend(parse_one_line(&text)),
            Some("sources") => sources.extend(parse_deb822(&text)),
            // `.disabled`, `.save`, `.dpkg-old`, …: apt ignores them too.
            _ => {}
        }
    }
    let exact = sources
        .iter()
        .find(|s| s.suites.iter().any(|x| x == suite))
        .and_then(|s| s.uris.first());
    let fallback = || {
        sources
            .iter()
            .flat_map(|s| &s.uris)
            .find(|u| !u.contains("security"))
    };
    exact
        .or_else(fallback)
        .map(|u| u.trim_end_matches('/').to_owned())
}

/// `deb [options] uri suite component…` lines.
fn parse_one_line(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let mut rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('[') {
            let Some((_, after)) = after.split_once(']') else {
                continue;
            };
            rest = after.trim_start();
        }
        let mut words = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push(Source {
                uris: vec![uri.to_owned()],
                suites: vec![suite.to_owned()],
            });
        }
    }
    out
}

/// deb822 stanzas (`Types:`, `URIs:`, `Suites:`, `Enabled:`), separated by blank lines.
fn parse_deb822(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut types = Vec::new();
        let mut uris = Vec::new();
        let mut suites = Vec::new();
        let mut enabled = true;
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let values = || {
                value
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "types" => types = values(),
                "uris" => uris = values(),
                "suites" => suites = values(),
                "enabled" => enabled = value.trim() != "no",
                _ => {}
            }
        }
        if enabled && types.iter().any(|t| t == "deb") && !uris.is_empty() {
            out.push(Source { uris, suites });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etc(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        for (name, text) in files {
            fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn reads_deb822_and_skips_security_and_disabled_files() {
        let dir = etc(&[
            (
                "sources.list.d/debian.sources",
                "Types: deb\n# http://snapshot\nURIs: http://mirror.example/debian-security\n\
                 Suites: bookworm-security\nComponents: main\n\n\
                 Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n",
            ),
            (
                "sources.list.d/other.sources.disabled",
                "Types: deb\nURIs: http://wrong.example/\nSuites: bookworm\n",
            ),
        ]);
        assert_eq!(
            find_mirror(dir.path(), "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn reads_one_line_format_with_options() {
        let dir = etc(&[(
            "sources.list",
            "# comment\ndeb-src http://src.example/ bookworm main\n\
             deb [arch=amd64 signed-by=/k.gpg] http://proxy:3142/debian bookworm main # x\n",
        )]);
        assert_eq!(
            find_mirror(dir.path(), "bookworm").as_deref(),
            Some("http://proxy:3142/debian")
        );
        // No entry for the suite asked for: the first non-security one still is the mirror.
        assert_eq!(
            find_mirror(dir.path(), "trixie").as_deref(),
            Some("http://proxy:3142/debian")
        );
    }

    #[test]
    fn disabled_stanzas_and_empty_configs_give_none() {
        let dir = etc(&[(
            "sources.list.d/d.sources",
            "Enabled: no\nTypes: deb\nURIs: http://off.example/\nSuites: bookworm\n",
        )]);
        assert_eq!(find_mirror(dir.path(), "bookworm"), None);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(find_mirror(empty.path(), "bookworm"), None);
    }
}
