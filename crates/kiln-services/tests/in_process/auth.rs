//! API-key authentication as the services see it.
use crate::harness::start;

/// A key's `last_used_at` is set on first use and then kept to the minute: a busy key
/// does not cost a store write per request.
#[tokio::test]
async fn a_keys_last_use_is_written_once_a_minute_not_per_request() {
    let env = start(|_| {}).await;
    let created = env
        .kiln
        .auth
        .create_api_key(&env.user, Some("busy".into()))
        .await
        .unwrap();
    let last_used = || async {
        let keys = env.kiln.auth.list_api_keys(&env.user).await.unwrap();
        let key = keys
            .iter()
            .find(|k| k.key_id == created.record.key_id)
            .expect("the key is listed");
        key.last_used_at
    };
    assert_eq!(last_used().await, None, "unused so far");

    let principal = env.kiln.auth.authenticate(&created.secret).await.unwrap();
    assert_eq!(principal.user.user_id, env.user);
    let first = last_used().await.expect("the first use is recorded");
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        env.kiln.auth.authenticate(&created.secret).await.unwrap();
    }
    assert_eq!(
        last_used().await,
        Some(first),
        "uses within the minute leave last_used_at as it was"
    );
}
