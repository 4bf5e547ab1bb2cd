//! Datasets and samples: imports, versions, listings.
use chrono::Duration;
use kiln_store::{NewSample, SampleQuery, StoreError};

use crate::harness::{base_time, import, new_user, record, TestDb};

fn query(
    dataset: Option<&str>,
    search: Option<&str>,
    limit: Option<u64>,
    offset: u64,
) -> SampleQuery {
    SampleQuery {
        visible_to: None,
        dataset: dataset.map(str::to_string),
        search: search.map(str::to_string),
        limit,
        offset,
    }
}

/// `(dataset, sample_id, version)` of each listed sample, for compact assertions.
async fn listed(db: &TestDb, q: SampleQuery) -> (Vec<(String, String, i64)>, u64) {
    let page = db.store.list_samples(&q).await.unwrap();
    assert!(
        page.samples.iter().all(|s| s.latest),
        "listings hold latest versions only"
    );
    (
        page.samples
            .into_iter()
            .map(|s| (s.dataset, s.sample_id, s.version))
            .collect(),
        page.total,
    )
}

fn triples(items: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
    items
        .iter()
        .map(|(d, s, v)| (d.to_string(), s.to_string(), *v))
        .collect()
}

pub async fn import_creates_dataset_and_versions(db: TestDb) {
    let store = db.store.as_ref();
    let t1 = base_time();
    let t2 = t1 + Duration::minutes(5);

    let mut first = import("swe", &["a__a-1", "b__b-2"], 1, t1);
    first.description = Some("first".into());
    let summary = store.import_samples(&first).await.unwrap();
    assert_eq!((summary.created, summary.updated), (2, 0));

    let dataset = store
        .get_dataset("swe")
        .await
        .unwrap()
        .expect("dataset created");
    assert_eq!(dataset.description.as_deref(), Some("first"));
    assert_eq!((dataset.sample_count, dataset.created_at), (2, t1));

    let a1 = store
        .get_sample("swe", "a__a-1", None)
        .await
        .unwrap()
        .expect("sample a");
    assert_eq!(
        (
            a1.dataset.as_str(),
            a1.sample_id.as_str(),
            a1.version,
            a1.latest
        ),
        ("swe", "a__a-1", 1, true)
    );
    assert_eq!(
        a1.record,
        record("a__a-1", 1),
        "the record comes back verbatim, extra fields included"
    );
    assert_eq!(
        (a1.instance_id.as_str(), a1.repo.as_str()),
        ("a__a-1", "org/a")
    );
    assert_eq!(a1.base_commit, record("a__a-1", 1).base_commit);
    assert_eq!(
        (a1.created_at, a1.version_description.as_deref()),
        (t1, Some("revision 1"))
    );

    // Re-import a (changed) and add c, without a description: the old one stays.
    let summary = store
        .import_samples(&import("swe", &["a__a-1", "c__c-3"], 2, t2))
        .await
        .unwrap();
    assert_eq!((summary.created, summary.updated), (1, 1));
    let dataset = store.get_dataset("swe").await.unwrap().unwrap();
    assert_eq!(dataset.description.as_deref(), Some("first"));
    assert_eq!(
        (dataset.sample_count, dataset.created_at),
        (3, t1),
        "created_at is the first import's"
    );

    let a2 = store
        .get_sample("swe", "a__a-1", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a2.version, a2.latest, a2.created_at), (2, true, t2));
    assert_eq!(a2.record, record("a__a-1", 2));
    assert_eq!(a2.version_description.as_deref(), Some("revision 2"));
    let old = store
        .get_sample("swe", "a__a-1", Some(1))
        .await
        .unwrap()
        .expect("v1 still fetchable");
    assert_eq!(old, not_latest(a1.clone()));
    assert_eq!(
        store.get_sample("swe", "a__a-1", Some(2)).await.unwrap(),
        Some(a2.clone())
    );
    assert_eq!(
        store.get_sample("swe", "a__a-1", Some(3)).await.unwrap(),
        None
    );
    assert_eq!(store.get_sample("swe", "zzz", None).await.unwrap(), None);
    assert_eq!(
        store.get_sample("other", "a__a-1", None).await.unwrap(),
        None
    );

    let (all, total) = listed(&db, query(Some("swe"), None, None, 0)).await;
    assert_eq!(
        all,
        triples(&[
            ("swe", "a__a-1", 2),
            ("swe", "b__b-2", 1),
            ("swe", "c__c-3", 1)
        ])
    );
    assert_eq!(total, 3);

    // A third version; a description given now replaces the old one.
    let mut third = import("swe", &["a__a-1"], 3, t2 + Duration::minutes(1));
    third.description = Some("second".into());
    store.import_samples(&third).await.unwrap();
    assert_eq!(
        store
            .get_dataset("swe")
            .await
            .unwrap()
            .unwrap()
            .description
            .as_deref(),
        Some("second")
    );
    for (version, latest) in [(1, false), (2, false), (3, true)] {
        let sample = store
            .get_sample("swe", "a__a-1", Some(version))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sample.latest, latest, "version {version}");
        assert_eq!(sample.record, record("a__a-1", version as u32));
    }
    assert_eq!(
        store
            .get_dataset("swe")
            .await
            .unwrap()
            .unwrap()
            .sample_count,
        3
    );
}

pub(crate) fn not_latest(mut sample: kiln_store::Sample) -> kiln_store::Sample {
    sample.latest = false;
    sample
}

pub async fn import_with_duplicate_sample_id_writes_nothing(db: TestDb) {
    let store = db.store.as_ref();
    store
        .import_samples(&import("swe", &["a"], 1, base_time()))
        .await
        .unwrap();
    let before = store.list_samples(&SampleQuery::default()).await.unwrap();
    let datasets_before = store.list_datasets().await.unwrap();

    // `a` is written first (a new version), `b` second; the second `a` must undo both.
    let mut bad = import("swe", &["a", "b", "a"], 2, base_time() + Duration::hours(1));
    bad.description = Some("must not stick".into());
    let result = store.import_samples(&bad).await;
    assert!(
        matches!(result, Err(StoreError::Conflict("sample_id"))),
        "{result:?}"
    );

    assert_eq!(
        store.list_samples(&SampleQuery::default()).await.unwrap(),
        before
    );
    assert_eq!(store.list_datasets().await.unwrap(), datasets_before);
    assert_eq!(store.get_sample("swe", "a", Some(2)).await.unwrap(), None);
    assert_eq!(store.get_sample("swe", "b", None).await.unwrap(), None);

    // Into a new dataset: not even the dataset is created.
    let result = store
        .import_samples(&import("fresh", &["x", "x"], 1, base_time()))
        .await;
    assert!(
        matches!(result, Err(StoreError::Conflict("sample_id"))),
        "{result:?}"
    );
    assert_eq!(store.get_dataset("fresh").await.unwrap(), None);

    // The failed imports left no lock or half-state behind: the next import works normally.
    let summary = store
        .import_samples(&import("swe", &["a", "b"], 2, base_time()))
        .await
        .unwrap();
    assert_eq!((summary.created, summary.updated), (1, 1));
    assert_eq!(
        store
            .get_sample("swe", "a", None)
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
}

pub async fn empty_import_creates_the_dataset(db: TestDb) {
    let store = db.store.as_ref();
    let mut empty = import("empty", &[], 1, base_time());
    empty.description = Some("nothing yet".into());
    let summary = store.import_samples(&empty).await.unwrap();
    assert_eq!((summary.created, summary.updated), (0, 0));
    let dataset = store.get_dataset("empty").await.unwrap().unwrap();
    assert_eq!(
        (dataset.sample_count, dataset.description.as_deref()),
        (0, Some("nothing yet"))
    );
}

pub async fn datasets_listed_by_name_with_latest_counts(db: TestDb) {
    let store = db.store.as_ref();
    assert_eq!(store.list_datasets().await.unwrap(), vec![]);
    assert_eq!(store.get_dataset("beta").await.unwrap(), None);

    let now = base_time();
    store
        .import_samples(&import("beta", &["s1", "s2"], 1, now))
        .await
        .unwrap();
    store
        .import_samples(&import("alpha", &["s1"], 1, now + Duration::seconds(1)))
        .await
        .unwrap();
    store
        .import_samples(&import("Alpha", &["s1"], 1, now))
        .await
        .unwrap();
    store
        .import_samples(&import("_under", &["s1", "s2", "s3"], 1, now))
        .await
        .unwrap();
    // New versions do not count twice.
    store
        .import_samples(&import("beta", &["s1"], 2, now))
        .await
        .unwrap();
    store
        .import_samples(&import("beta", &["s1"], 3, now))
        .await
        .unwrap();

    let datasets = store.list_datasets().await.unwrap();
    let summary: Vec<_> = datasets
        .iter()
        .map(|d| (d.name.as_str(), d.sample_count))
        .collect();
    // Byte order on both backends, whatever PostgreSQL's locale would say.
    assert_eq!(
        summary,
        vec![("Alpha", 1), ("_under", 3), ("alpha", 1), ("beta", 2)]
    );
    assert_eq!(datasets[2].created_at, now + Duration::seconds(1));
    assert_eq!(datasets[2].description, None);
    assert_eq!(
        store.get_dataset("beta").await.unwrap().as_ref(),
        Some(&datasets[3])
    );
}

pub async fn search_matches_literally_and_ignores_case(db: TestDb) {
    let store = db.store.as_ref();
    let ids = [
        "Django__Django-11099",
        "djangoABdjango-2",
        "astropy__astropy-7",
        "sympy%x-1",
        "sympyABx-2",
        r"back\slash-1",
    ];
    store
        .import_samples(&import("swe", &ids, 1, base_time()))
        .await
        .unwrap();
    store
        .import_samples(&import("other", &["django__django-5"], 1, base_time()))
        .await
        .unwrap();

    let found = |search: &'static str, dataset: Option<&'static str>| {
        let db = &db;
        async move {
            let (items, total) = listed(db, query(dataset, Some(search), None, 0)).await;
            assert_eq!(total as usize, items.len());
            items
                .into_iter()
                .map(|(d, s, _)| format!("{d}/{s}"))
                .collect::<Vec<_>>()
        }
    };

    assert_eq!(
        found("django__django", None).await,
        vec!["other/django__django-5", "swe/Django__Django-11099"],
        "`_` is literal, case ignored"
    );
    assert_eq!(
        found("DJANGO", Some("swe")).await,
        vec!["swe/Django__Django-11099", "swe/djangoABdjango-2"]
    );
    assert_eq!(
        found("y%x", None).await,
        vec!["swe/sympy%x-1"],
        "`%` is literal"
    );
    assert_eq!(found("%", None).await, vec!["swe/sympy%x-1"]);
    assert_eq!(
        found("_", Some("swe")).await,
        vec!["swe/Django__Django-11099", "swe/astropy__astropy-7"]
    );
    assert_eq!(
        found(r"\", None).await,
        vec![r"swe/back\slash-1"],
        "the escape character is literal too"
    );
    assert_eq!(found("nothing-like-this", None).await, Vec::<String>::new());
    // No stored text holds a NUL, and PostgreSQL refuses one in a parameter (an error, not
    // an empty answer, before this was checked).
    assert_eq!(found("dj\0ango", None).await, Vec::<String>::new());
    assert_eq!(found("django", Some("s\0we")).await, Vec::<String>::new());
    assert_eq!(
        found("", None).await.len(),
        ids.len() + 1,
        "an empty search matches everything"
    );

    // Search looks at the latest version only: once `astropy__astropy-7` is re-imported under
    // another instance_id, the old one is not found.
    let renamed = NewSample {
        sample_id: "astropy__astropy-7".into(),
        record: record("astropy__astropy-8", 2),
    };
    let mut reimport = import("swe", &[], 2, base_time());
    reimport.samples.push(renamed);
    store.import_samples(&reimport).await.unwrap();
    assert_eq!(found("astropy-7", None).await, Vec::<String>::new());
    assert_eq!(
        found("astropy-8", None).await,
        vec!["swe/astropy__astropy-7"]
    );
}

pub async fn pagination_reports_total_of_all_matches(db: TestDb) {
    let store = db.store.as_ref();
    let a_ids = ["s1", "s10", "s2", "s9", "S3"];
    store
        .import_samples(&import("a", &a_ids, 1, base_time()))
        .await
        .unwrap();
    store
        .import_samples(&import("b", &["s1", "s2", "s3"], 1, base_time()))
        .await
        .unwrap();
    store
        .import_samples(&import("b", &["s2"], 2, base_time()))
        .await
        .unwrap();

    // Expected order: (dataset, sample_id) in byte order.
    let mut expected: Vec<(String, String, i64)> = a_ids
        .iter()
        .map(|s| ("a".to_string(), s.to_string(), 1))
        .collect();
    expected.sort();
    expected.extend(triples(&[("b", "s1", 1), ("b", "s2", 2), ("b", "s3", 1)]));

    assert_eq!(
        listed(&db, query(None, None, None, 0)).await,
        (expected.clone(), 8)
    );
    assert_eq!(
        listed(&db, query(None, None, Some(3), 0)).await,
        (expected[0..3].to_vec(), 8)
    );
    assert_eq!(
        listed(&db, query(None, None, Some(3), 3)).await,
        (expected[3..6].to_vec(), 8)
    );
    assert_eq!(
        listed(&db, query(None, None, Some(3), 6)).await,
        (expected[6..8].to_vec(), 8)
    );
    assert_eq!(
        listed(&db, query(None, None, Some(3), 8)).await,
        (vec![], 8)
    );
    assert_eq!(
        listed(&db, query(None, None, Some(3), 100)).await,
        (vec![], 8)
    );
    assert_eq!(
        listed(&db, query(None, None, Some(0), 0)).await,
        (vec![], 8)
    );
    assert_eq!(
        listed(&db, query(None, None, None, 5)).await,
        (expected[5..].to_vec(), 8),
        "offset without limit"
    );
    assert_eq!(
        listed(&db, query(None, None, Some(u64::MAX), 0)).await,
        (expected.clone(), 8)
    );
    assert_eq!(
        listed(&db, query(Some("b"), None, Some(2), 1)).await,
        (expected[6..8].to_vec(), 3)
    );
    assert_eq!(
        listed(&db, query(Some("nope"), None, Some(2), 0)).await,
        (vec![], 0)
    );
    assert_eq!(
        listed(&db, query(Some("a"), Some("s1"), Some(1), 1))
            .await
            .1,
        2,
        "s1 and s10"
    );
}

/// A dataset with an owner is listed (its samples) only to that account; the owner can be
/// set and cleared, and a missing dataset is reported.
pub async fn private_datasets_are_listed_to_their_owner_only(db: TestDb) {
    let store = db.store.as_ref();
    store
        .create_user(&new_user("org-acct", None))
        .await
        .unwrap();
    let now = base_time();
    store
        .import_samples(&import("open", &["o1"], 1, now))
        .await
        .unwrap();
    store
        .import_samples(&import("secret", &["s1", "s2"], 1, now))
        .await
        .unwrap();
    assert!(store
        .set_dataset_owner("secret", Some("org-acct"))
        .await
        .unwrap());
    assert!(!store
        .set_dataset_owner("nope", Some("org-acct"))
        .await
        .unwrap());
    let secret = store.get_dataset("secret").await.unwrap().unwrap();
    assert_eq!(secret.owner_user_id.as_deref(), Some("org-acct"));
    assert!(secret.visible_to("org-acct") && !secret.visible_to("someone"));
    let owner = |name: &'static str| async move { store.dataset_owner(name).await.unwrap() };
    assert_eq!(owner("secret").await, Some(Some("org-acct".to_string())));
    assert_eq!(owner("open").await, Some(None));
    assert_eq!(owner("nope").await, None);

    let seen_by = |viewer: Option<&str>| SampleQuery {
        visible_to: viewer.map(str::to_string),
        ..SampleQuery::default()
    };
    let ids = |q: SampleQuery| async move {
        let page = store.list_samples(&q).await.unwrap();
        (
            page.samples
                .iter()
                .map(|s| s.sample_id.clone())
                .collect::<Vec<_>>(),
            page.total,
        )
    };
    assert_eq!(
        ids(seen_by(Some("someone"))).await,
        (vec!["o1".to_string()], 1)
    );
    assert_eq!(ids(seen_by(Some("org-acct"))).await.1, 3);
    assert_eq!(
        ids(seen_by(None)).await.1,
        3,
        "no viewer: the server's own view"
    );
    assert!(store.set_dataset_owner("secret", None).await.unwrap());
    assert_eq!(ids(seen_by(Some("someone"))).await.1, 3);
}
