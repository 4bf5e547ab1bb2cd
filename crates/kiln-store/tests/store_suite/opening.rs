//! Opening stores from URLs: the forms accepted, what is created, what is refused.
use kiln_store::prelude::*;
use kiln_store::StoreError;

#[tokio::test]
async fn sqlite_accepts_both_url_forms_and_creates_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    for (i, prefix) in ["sqlite://", "sqlite:"].into_iter().enumerate() {
        let path = dir.path().join(format!("nested-{i}/deeper/kiln.db"));
        let store = kiln_store::sqlite::SqliteStore::open(&format!("{prefix}{}", path.display()))
            .await
            .unwrap();
        store.ping().await.unwrap();
        assert_eq!(store.count_users().await.unwrap(), 0);
        assert!(path.is_file(), "{prefix}: database file created");
        // The write-ahead log sits beside the database while the store is open.
        let wal = path.with_file_name("kiln.db-wal");
        assert!(wal.is_file(), "{prefix}: WAL journal in use");
        store.close().await;
    }
}

#[tokio::test]
async fn unknown_schemes_are_refused_without_leaking_passwords() {
    let refused = kiln_store::connect("mysql://root:hunter2@db/kiln").await;
    match refused {
        Err(StoreError::UnsupportedUrl(shown)) => {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("db/kiln"), "{shown}");
        }
        Err(other) => panic!("expected UnsupportedUrl, got {other}"),
        Ok(_) => panic!("a mysql URL must be refused"),
    }
}

#[tokio::test]
async fn unreachable_postgres_is_an_open_error_without_the_password() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let failed = kiln_store::connect("postgres://kiln:hunter2@127.0.0.1:1/kiln").await;
    match failed {
        Err(StoreError::Open(message)) => assert!(!message.contains("hunter2"), "{message}"),
        Err(other) => panic!("expected an Open error, got {other}"),
        Ok(_) => panic!("nothing listens on port 1"),
    }
}
