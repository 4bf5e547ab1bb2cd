//! Base images: versions numbered per family and never reused, status changes that happen
//! once and only from the right status, promote and rollback moving the current version.
use std::sync::Arc;

use chrono::Duration;
use kiln_store::{
    BaseImageInsert, BaseImageLimits, BaseImageOutcome, BaseImageProgress, BaseImageRecord,
    BaseImageStatus, NewBaseImage, Store, StoreError,
};

use crate::harness::{base_time, create_user, TestDb};

const ROOMY: BaseImageLimits = BaseImageLimits {
    max_versions_per_family: 100,
    max_preparing: 100,
};

fn new(id: &str, family: &str) -> NewBaseImage {
    NewBaseImage {
        image_id: id.into(),
        family: family.into(),
        source: "from:x".into(),
        created_by: "admin".into(),
        created_at: base_time(),
        node_id: Some(format!("node-of-{id}")),
    }
}

async fn insert(store: &dyn Store, id: &str, family: &str) -> BaseImageRecord {
    match store
        .insert_base_image(&new(id, family), ROOMY)
        .await
        .unwrap()
    {
        BaseImageInsert::Inserted(record) => *record,
        other => panic!("{other:?}"),
    }
}

async fn prepared(store: &dyn Store, id: &str, family: &str) -> BaseImageRecord {
    insert(store, id, family).await;
    let outcome = BaseImageOutcome::Prepared {
        size_bytes: 10,
        digest: "sha256:00".into(),
    };
    store
        .finish_base_image(id, &outcome, base_time())
        .await
        .unwrap()
        .unwrap()
}

pub async fn base_image_versions_move_through_their_statuses_once(db: TestDb) {
    let store = db.store.as_ref();
    create_user(store, "admin").await;
    let missing = store.insert_base_image(&new("b0", "py"), ROOMY).await;
    let mut nobody = new("bx", "py");
    nobody.created_by = "nobody".into();
    assert!(missing.is_ok());
    assert!(matches!(
        store.insert_base_image(&nobody, ROOMY).await,
        Err(StoreError::Missing(_))
    ));

    let b0 = store.get_base_image("b0").await.unwrap().unwrap();
    assert_eq!(
        (b0.version, b0.status, b0.current),
        (1, BaseImageStatus::Preparing, false)
    );
    assert_eq!(b0.node_id.as_deref(), Some("node-of-b0"));
    let progress = BaseImageProgress {
        layers_done: 1,
        layers_total: 2,
        bytes_done: 3,
        bytes_total: 4,
    };
    let later = base_time() + Duration::seconds(1);
    store
        .set_base_image_progress("b0", progress, later)
        .await
        .unwrap();
    let b0 = store.get_base_image("b0").await.unwrap().unwrap();
    assert_eq!((b0.progress, b0.updated_at), (progress, later));
    // Aborted while preparing: the end of the preparation changes nothing.
    assert!(store.abort_base_image("b0", later).await.unwrap().is_some());
    let failed = BaseImageOutcome::Failed { error: "x".into() };
    assert_eq!(
        store.finish_base_image("b0", &failed, later).await.unwrap(),
        None
    );
    assert_eq!(store.abort_base_image("b0", later).await.unwrap(), None);
    assert_eq!(store.promote_base_image("b0", later).await.unwrap(), None);

    let b1 = prepared(store, "b1", "py").await;
    assert_eq!((b1.version, b1.size_bytes), (2, Some(10)));
    assert_eq!(store.rollback_base_image_family("py").await.unwrap(), None);
    let b1 = store
        .promote_base_image("b1", later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (b1.status, b1.current, b1.promoted_at),
        (BaseImageStatus::Promoted, true, Some(later))
    );
    let b2 = prepared(store, "b2", "py").await;
    store
        .promote_base_image("b2", later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .current_base_image("py")
            .await
            .unwrap()
            .unwrap()
            .image_id,
        "b2"
    );
    assert!(!store.get_base_image("b1").await.unwrap().unwrap().current);
    assert_eq!(b2.version, 3);

    // The current version and one preparing cannot be deleted.
    insert(store, "b3", "py").await;
    assert!(!store.delete_base_image("b2").await.unwrap());
    assert!(!store.delete_base_image("b3").await.unwrap());
    let back = store
        .rollback_base_image_family("py")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((back.image_id.as_str(), back.current), ("b1", true));
    assert_eq!(store.rollback_base_image_family("py").await.unwrap(), None);
    assert!(store.delete_base_image("b2").await.unwrap());
    // Numbers are never reused.
    assert_eq!(insert(store, "b4", "py").await.version, 5);
    assert_eq!(insert(store, "n1", "node").await.version, 1);
    let versions: Vec<u64> = store
        .list_base_images(Some("py"))
        .await
        .unwrap()
        .iter()
        .map(|b| b.version)
        .collect();
    assert_eq!(versions, [5, 4, 2, 1]);
    assert_eq!(store.list_base_images(None).await.unwrap().len(), 5);
}

pub async fn racing_base_image_inserts_get_distinct_numbers(db: TestDb) {
    let store: Arc<dyn Store> = db.store.clone();
    create_user(store.as_ref(), "admin").await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .insert_base_image(&new(&format!("r{i}"), "race"), ROOMY)
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert!(matches!(task.await.unwrap(), BaseImageInsert::Inserted(_)));
    }
    let mut versions: Vec<u64> = store
        .list_base_images(Some("race"))
        .await
        .unwrap()
        .iter()
        .map(|b| b.version)
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    // Limits: versions of the family, preparing ones over all families.
    let full = BaseImageLimits {
        max_versions_per_family: 8,
        max_preparing: 100,
    };
    let over = store
        .insert_base_image(&new("r9", "race"), full)
        .await
        .unwrap();
    assert_eq!(over, BaseImageInsert::TooManyVersions);
    let busy = BaseImageLimits {
        max_versions_per_family: 100,
        max_preparing: 8,
    };
    let over = store
        .insert_base_image(&new("o1", "other"), busy)
        .await
        .unwrap();
    assert_eq!(over, BaseImageInsert::TooManyPreparing);
}
