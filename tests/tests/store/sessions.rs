//! The conformance tests of MQTT sessions kept while their clients are away, their queues, and
//! retained messages: the same on every backend.

use super::Subject;
use gateway::infra::time::unix_millis;
use gateway::store::sessions::{QueueBound, SessionKey};

fn phone() -> SessionKey {
    SessionKey::Device {
        user: "alice".into(),
        device: "phone".into(),
    }
}

fn client() -> SessionKey {
    // Any client id, braces and all.
    SessionKey::Client("anonymous:{weird}/id".into())
}

pub async fn a_session_is_kept_until_it_expires_or_is_dropped(s: Subject) {
    let hour = unix_millis() + 3_600_000;
    for key in [phone(), client()] {
        assert_eq!(s.store.session(&key).await.unwrap(), None);
        s.store.put_session(&key, b"state one", hour).await.unwrap();
        s.store.put_session(&key, b"state two", hour).await.unwrap();
        assert_eq!(
            s.store.session(&key).await.unwrap().as_deref(),
            Some(&b"state two"[..])
        );
    }
    let kept = s.store.kept_sessions().await.unwrap();
    let mut names: Vec<_> = kept.iter().map(|(key, _)| key.name()).collect();
    names.sort();
    let mut expected = vec![phone().name(), client().name()];
    expected.sort();
    assert_eq!(names, expected);

    s.store.drop_session(&client()).await.unwrap();
    assert_eq!(s.store.session(&client()).await.unwrap(), None);
    // An expiry in the past: as if never kept.
    s.store
        .put_session(&phone(), b"old", unix_millis() - 1)
        .await
        .unwrap();
    assert_eq!(s.store.session(&phone()).await.unwrap(), None);
    assert!(s.store.kept_sessions().await.unwrap().is_empty());
}

pub async fn a_queue_keeps_the_newest_within_its_count_and_bytes(s: Subject) {
    let key = client();
    s.store
        .put_session(&key, b"state", unix_millis() + 3_600_000)
        .await
        .unwrap();
    let by_count = QueueBound {
        messages: 3,
        bytes: 1 << 20,
    };
    let mut dropped = 0;
    for n in 0..5 {
        dropped += s
            .store
            .enqueue(&key, format!("m{n}").as_bytes(), by_count)
            .await
            .unwrap();
    }
    assert_eq!(dropped, 2);
    let taken = s.store.take_queued(&key).await.unwrap();
    assert_eq!(taken, [b"m2".to_vec(), b"m3".to_vec(), b"m4".to_vec()]);
    assert!(
        s.store.take_queued(&key).await.unwrap().is_empty(),
        "taken once"
    );

    // By bytes: each sealed message is larger than its 1,000 bytes, so 3,500 hold three at most.
    let by_bytes = QueueBound {
        messages: 100,
        bytes: 3_500,
    };
    for n in 0..5u8 {
        s.store.enqueue(&key, &[n; 1000], by_bytes).await.unwrap();
    }
    let taken = s.store.take_queued(&key).await.unwrap();
    assert!((1..=3).contains(&taken.len()), "{}", taken.len());
    assert_eq!(taken.last().unwrap(), &vec![4u8; 1000], "the newest stays");
    // One message larger than the bound still stays, alone.
    s.store.enqueue(&key, &[9; 5000], by_bytes).await.unwrap();
    assert_eq!(s.store.take_queued(&key).await.unwrap().len(), 1);

    s.store.enqueue(&key, b"left", by_count).await.unwrap();
    s.store.drop_session(&key).await.unwrap();
    assert!(
        s.store.take_queued(&key).await.unwrap().is_empty(),
        "dropped with it"
    );
}

pub async fn deleting_a_user_drops_its_devices_sessions(s: Subject) {
    let hour = unix_millis() + 3_600_000;
    let bound = QueueBound {
        messages: 10,
        bytes: 1 << 20,
    };
    s.store.put_session(&phone(), b"state", hour).await.unwrap();
    s.store.enqueue(&phone(), b"queued", bound).await.unwrap();
    s.store
        .put_session(&client(), b"other", hour)
        .await
        .unwrap();
    s.store.delete_user("alice").await.unwrap();
    assert_eq!(s.store.session(&phone()).await.unwrap(), None);
    assert!(s.store.take_queued(&phone()).await.unwrap().is_empty());
    assert!(
        s.store.session(&client()).await.unwrap().is_some(),
        "not alice's"
    );
}

pub async fn retained_messages_are_set_replaced_and_cleared(s: Subject) {
    assert!(s.store.retained().await.unwrap().is_empty());
    s.store.put_retained("a/b", Some(b"one")).await.unwrap();
    s.store.put_retained("a/b", Some(b"two")).await.unwrap();
    s.store.put_retained("c", Some(b"three")).await.unwrap();
    let mut all = s.store.retained().await.unwrap();
    all.sort();
    assert_eq!(
        all,
        [
            ("a/b".to_string(), b"two".to_vec()),
            ("c".to_string(), b"three".to_vec())
        ]
    );
    s.store.put_retained("a/b", None).await.unwrap();
    assert_eq!(s.store.retained().await.unwrap().len(), 1);
}
