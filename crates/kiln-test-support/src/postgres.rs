//! Fresh PostgreSQL databases for tests, on the server of `KILN_TEST_POSTGRES_URL` (an
//! admin URL, as `scripts/start-postgres.sh` prints it). Each test makes its own database
//! and drops it, so tests can run in parallel on one shared server.
use std::io::Write;

use sqlx::{Connection, Executor, PgConnection};

/// The admin URL of the PostgreSQL test server, if there is one. Without one the
/// PostgreSQL half of a suite is skipped on a developer's machine (said once per test
/// binary, past the harness's output capture) but fails under `CI`, where a silently
/// skipped backend would look like a passing one.
///
/// # Panics
/// Under `CI` when `KILN_TEST_POSTGRES_URL` is not set.
pub fn admin_url() -> Option<String> {
    match std::env::var("KILN_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) => panic!(
            "KILN_TEST_POSTGRES_URL is not set, but CI is: the PostgreSQL tests must run in CI. \
             Start a server with scripts/start-postgres.sh and export the URL it prints."
        ),
        _ => {
            static NOTE: std::sync::Once = std::sync::Once::new();
            NOTE.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: KILN_TEST_POSTGRES_URL is not set: the PostgreSQL tests pass without \
                     running. Set it (scripts/start-postgres.sh prints one) to run them."
                );
            });
            None
        }
    }
}

/// `admin_url` with its database replaced by `database` (query parameters kept).
pub fn with_database(admin_url: &str, database: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut url = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// How a test database collates text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locale {
    /// The server's default (often `C`).
    #[default]
    ServerDefault,
    /// ICU `en-US`, as production databases often have (falling back to the default,
    /// with a note, where the server has no ICU): code must give byte order whatever the
    /// locale.
    IcuEnUs,
}

/// A database made for one test on the server of an admin URL. Drop it explicitly with
/// [`TestDatabase::drop_now`] (async) or [`TestDatabase::drop_blocking`] (from `Drop`).
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// The admin URL it was made with.
    pub admin_url: String,
    /// Its name (`<prefix>_<uuid>`).
    pub name: String,
    /// The URL to connect to it.
    pub url: String,
}

impl TestDatabase {
    /// Creates `<prefix>_<uuid>` on the server of `admin_url`.
    ///
    /// # Panics
    /// When the server cannot be reached or refuses: the test cannot run.
    pub async fn create(admin_url: &str, prefix: &str, locale: Locale) -> Self {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(admin_url).await.unwrap_or_else(|e| {
            panic!("cannot connect to the PostgreSQL test server: {e}");
        });
        let plain = format!("CREATE DATABASE {name}");
        if locale == Locale::IcuEnUs {
            let icu = format!(
                "CREATE DATABASE {name} LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8' \
                 TEMPLATE template0"
            );
            if let Err(e) = admin.execute(icu.as_str()).await {
                eprintln!("note: no ICU en-US database ({e}); using the server's default locale");
                admin
                    .execute(plain.as_str())
                    .await
                    .expect("create test database");
            }
        } else {
            admin
                .execute(plain.as_str())
                .await
                .expect("create test database");
        }
        let _ = admin.close().await;
        TestDatabase {
            admin_url: admin_url.to_string(),
            url: with_database(admin_url, &name),
            name,
        }
    }

    /// Drops the database; `FORCE` ends connections a dropped pool may still be closing.
    pub async fn drop_now(&self) -> Result<(), sqlx::Error> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        admin
            .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
            .await?;
        let _ = admin.close().await;
        Ok(())
    }

    /// [`TestDatabase::drop_now`] on a runtime of its own, for `Drop` impls (which may
    /// run inside or outside a runtime); failures are printed, not raised.
    pub fn drop_blocking(&self) {
        let this = self.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(this.drop_now()).map_err(|e| e.to_string())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cannot drop test database {}: {e}", self.name),
            Err(_) => eprintln!(
                "cannot drop test database {}: the dropping thread panicked",
                self.name
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_path() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
