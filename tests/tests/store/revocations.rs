//! The conformance tests of revoked tokens: the same on every backend.

use super::Subject;
use gateway::store::revocations::Revoked;

pub async fn a_revocation_covers_its_scope_and_only_moves_forward(s: Subject) {
    let phone = Revoked::Device {
        user: "alice",
        device: "phone",
    };
    assert_eq!(s.store.revoked_until("alice", "phone").await.unwrap(), 0);
    s.store.revoke(phone, 100).await.unwrap();
    assert_eq!(s.store.revoked_until("alice", "phone").await.unwrap(), 100);
    assert_eq!(s.store.revoked_until("alice", "laptop").await.unwrap(), 0);
    assert_eq!(s.store.revoked_until("bob", "phone").await.unwrap(), 0);

    s.store.revoke(Revoked::User("alice"), 50).await.unwrap();
    assert_eq!(s.store.revoked_until("alice", "phone").await.unwrap(), 100);
    assert_eq!(s.store.revoked_until("alice", "laptop").await.unwrap(), 50);

    s.store.revoke(phone, 80).await.unwrap();
    assert_eq!(
        s.store.revoked_until("alice", "phone").await.unwrap(),
        100,
        "an earlier revocation leaves a later one"
    );
    s.store.revoke(Revoked::User("alice"), 200).await.unwrap();
    assert_eq!(s.store.revoked_until("alice", "phone").await.unwrap(), 200);
    assert_eq!(s.store.revoked_until("alice", "laptop").await.unwrap(), 200);
}

pub async fn a_deleted_users_revocation_outlives_the_deletion(s: Subject) {
    s.sent("alice", "bob", "hi").await;
    s.store.revoke(Revoked::User("bob"), 300).await.unwrap();
    let phone = Revoked::Device {
        user: "bob",
        device: "phone",
    };
    s.store.revoke(phone, 400).await.unwrap();

    s.store.delete_user("bob").await.unwrap();
    assert_eq!(s.store.revoked_until("bob", "phone").await.unwrap(), 400);
    assert_eq!(s.store.revoked_until("bob", "tablet").await.unwrap(), 300);
    assert_eq!(
        s.store.footprint("bob").await.unwrap(),
        ["revocations/bob", "revocations/bob/phone"],
        "the revocations are all that is left"
    );
}
