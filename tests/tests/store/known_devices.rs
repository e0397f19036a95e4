//! The conformance tests of known devices: the same on every backend.

use super::Subject;
use gateway::store::known_devices::Standing;
use std::collections::HashMap;

pub async fn a_users_first_device_is_decided_once_and_others_are_new_until_remembered(s: Subject) {
    let store = &s.store;
    assert_eq!(
        store.standing("ann", "phone").await.unwrap(),
        Standing::First
    );
    assert_eq!(
        store.standing("ann", "phone").await.unwrap(),
        Standing::Known
    );
    assert_eq!(
        store.standing("ann", "laptop").await.unwrap(),
        Standing::New
    );
    assert_eq!(
        store.standing("ann", "laptop").await.unwrap(),
        Standing::New,
        "asking does not remember"
    );
    store.remember_device("ann", "laptop").await.unwrap();
    assert_eq!(
        store.standing("ann", "laptop").await.unwrap(),
        Standing::Known
    );
    assert_eq!(
        store.standing("bo", "laptop").await.unwrap(),
        Standing::First
    );

    // Ten devices of a user without any, all at once: one of them is the first.
    let asked = (0..10).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.standing("cy", &format!("d{i}")).await.unwrap() })
    });
    let mut standings: HashMap<String, usize> = HashMap::new();
    for standing in futures_util::future::join_all(asked).await {
        *standings
            .entry(format!("{:?}", standing.unwrap()))
            .or_default() += 1;
    }
    assert_eq!(standings["First"], 1, "{standings:?}");
    assert_eq!(standings["New"], 9, "{standings:?}");
}

pub async fn deleting_a_user_forgets_its_devices(s: Subject) {
    let store = &s.store;
    store.standing("dee", "phone").await.unwrap();
    store.remember_device("dee", "tablet").await.unwrap();
    store.delete_user("dee").await.unwrap();
    assert_eq!(store.footprint("dee").await.unwrap(), Vec::<String>::new());
    assert_eq!(
        store.standing("dee", "tablet").await.unwrap(),
        Standing::First
    );
}
