//! What a runtime reports of its host: each check, and whether all passed.

/// One thing checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCheck {
    /// What was checked, e.g. `bubblewrap`.
    pub name: &'static str,
    /// Whether it is usable.
    pub ok: bool,
    /// What was found (version, path, controllers).
    pub detail: String,
    /// How to fix it, when not ok.
    pub fix: Option<String>,
}

/// The result of all checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostReport {
    /// Every check, passed or not.
    pub checks: Vec<HostCheck>,
}

impl HostReport {
    /// Whether every check passed.
    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The failed checks.
    pub fn missing(&self) -> impl Iterator<Item = &HostCheck> {
        self.checks.iter().filter(|c| !c.ok)
    }

    pub(crate) fn push(
        &mut self,
        name: &'static str,
        ok: bool,
        detail: String,
        fix: impl Into<String>,
    ) {
        self.checks.push(HostCheck {
            name,
            ok,
            detail,
            fix: (!ok).then(|| fix.into()),
        });
    }
}

impl std::fmt::Display for HostReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for check in &self.checks {
            let mark = if check.ok { "ok " } else { "MISSING" };
            write!(f, "{mark} {}: {}", check.name, check.detail)?;
            if let Some(fix) = &check.fix {
                write!(f, " -> {fix}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
