//! Idempotency keys, for every backend: an append repeating a key within its window stores
//! nothing, is answered with the first append's entries, and is not delivered live again.

use super::Subject;
use gateway::store::Stored;
use std::time::Duration;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Each entry's log, seq, time and live payload.
fn entries(stored: &Stored) -> Vec<(String, u64, u64, Vec<u8>)> {
    (stored.entries.iter())
        .map(|e| (e.log.clone(), e.seq, e.hlc, e.payload.to_vec()))
        .collect()
}

/// The idempotency markers the store lists for `user`.
async fn markers(s: &Subject, user: &str) -> Vec<String> {
    let footprint = s.store.footprint(user).await.unwrap();
    (footprint.into_iter())
        .filter(|item| item.starts_with("idempotency/"))
        .collect()
}

pub async fn a_repeated_key_stores_nothing_and_answers_with_the_original(s: Subject) {
    s.sent("carol", "bob", "before").await;
    let first = s.send_keyed("alice", "bob", "hi", "k1").await;
    assert_eq!(first.repeat_of, None);
    let seqs: Vec<(&str, u64)> = (first.entries.iter())
        .map(|e| (e.log.as_str(), e.seq))
        .collect();
    assert_eq!(seqs, [("bob", 2), ("alice", 1)]);
    let delivered = s.delivered();

    let repeat = s.send_keyed("alice", "bob", "hi, again", "k1").await;
    assert_eq!(repeat.repeat_of.as_deref(), Some("alice-bob-hi"));
    assert_eq!(entries(&repeat), entries(&first), "the original's entries");
    assert_eq!(s.texts("bob").await, ["before", "hi"]);
    assert_eq!(s.texts("alice").await, ["hi"]);
    assert_eq!(
        s.delivered(),
        delivered,
        "a repeat is not delivered live again"
    );
    assert_eq!(
        s.sent("carol", "bob", "after").await,
        3,
        "no sequence was used"
    );
}

pub async fn repeats_queued_together_are_stored_once(s: Subject) {
    // Queued without waiting, as a connection pipelines its messages: the store takes them in
    // as few batches as it can, so repeats meet their original within a batch.
    let keys: Vec<String> = (0..20)
        .map(|i| match i % 2 {
            0 => "same".to_string(),
            _ => format!("other-{i}"),
        })
        .collect();
    let tickets: Vec<_> = (keys.iter().enumerate())
        .map(|(i, key)| s.keyed("alice", "bob", &format!("m{i}"), key, DAY))
        .collect();
    let mut answers = Vec::new();
    for ticket in tickets {
        answers.push(ticket.wait().await.unwrap());
    }
    let first = &answers[0];
    assert_eq!(first.repeat_of, None);
    for (i, answer) in answers.iter().enumerate().skip(1) {
        if i % 2 == 0 {
            assert_eq!(answer.repeat_of.as_deref(), Some("alice-bob-m0"), "{i}");
            assert_eq!(entries(answer), entries(first), "{i}");
        } else {
            assert_eq!(answer.repeat_of, None, "{i}");
        }
    }
    let stored = [
        "m0", "m1", "m3", "m5", "m7", "m9", "m11", "m13", "m15", "m17", "m19",
    ];
    assert_eq!(s.texts("bob").await, stored);
    assert_eq!(s.texts("alice").await, stored);
    assert_eq!(s.delivered(), 2 * stored.len(), "each stored entry, once");
}

pub async fn after_its_window_a_key_stores_anew_and_is_swept(s: Subject) {
    let window = Duration::from_secs(1);
    let after_window = Duration::from_millis(1100);
    let keyed = |text: &str| s.keyed("alice", "bob", text, "k", window).wait();
    let first = keyed("one").await.unwrap();
    let repeat = keyed("one again").await.unwrap();
    assert!(repeat.repeat_of.is_some());
    tokio::time::sleep(after_window).await;
    let second = keyed("two").await.unwrap();
    assert_eq!(second.repeat_of, None, "the window has ended");
    assert_eq!(second.entries[0].seq, first.entries[0].seq + 1);
    assert_eq!(s.texts("bob").await, ["one", "two"]);

    // The sweeper removes the markers whose window has ended, and only those.
    s.send_keyed("alice", "carol", "later", "kept").await;
    tokio::time::sleep(after_window).await;
    let report = s.store.sweep(0).await.unwrap();
    assert_eq!(report.expired_markers, 2, "k in bob's log and in alice's");
    assert_eq!(markers(&s, "bob").await, Vec::<String>::new());
    assert_eq!(
        markers(&s, "alice").await,
        ["idempotency/alice/alice>carol kept"]
    );
    let kept = s.send_keyed("alice", "carol", "later again", "kept").await;
    assert!(kept.repeat_of.is_some());
}

pub async fn keys_are_scoped_per_sender_and_recipient(s: Subject) {
    s.send_keyed("alice", "bob", "from alice", "k").await;
    let carol = s.send_keyed("carol", "bob", "from carol", "k").await;
    assert_eq!(carol.repeat_of, None, "another sender's key");
    assert_eq!(carol.entries[0].seq, 2);
    let dave = s.send_keyed("alice", "dave", "to dave", "k").await;
    assert_eq!(dave.repeat_of, None, "the same key to another recipient");
    assert_eq!(s.texts("bob").await, ["from alice", "from carol"]);
    assert_eq!(s.texts("alice").await, ["from alice", "to dave"]);
    assert_eq!(s.texts("dave").await, ["to dave"]);
    let again = s.send_keyed("carol", "bob", "again", "k").await;
    assert_eq!(again.repeat_of.as_deref(), Some("carol-bob-from carol"));
}

pub async fn a_repeat_of_a_trimmed_message_still_gets_its_seq(s: Subject) {
    // Opened keeping 3 messages per log.
    let first = s.send_keyed("alice", "bob", "first", "k").await;
    for i in 0..3 {
        s.sent("carol", "bob", &format!("t{i}")).await;
    }
    let repeat = s.send_keyed("alice", "bob", "first again", "k").await;
    assert_eq!(repeat.repeat_of.as_deref(), Some("alice-bob-first"));
    let (cut, kept) = (&repeat.entries[0], &repeat.entries[1]);
    assert_eq!(
        (cut.seq, cut.hlc),
        (first.entries[0].seq, first.entries[0].hlc)
    );
    assert!(cut.payload.is_empty(), "bob's copy was cut by retention");
    assert_eq!(
        kept.payload, first.entries[1].payload,
        "alice's copy is kept"
    );
    assert_eq!(s.texts("bob").await, ["t0", "t1", "t2"]);
}

pub async fn deleting_a_user_removes_the_keys_in_its_log(s: Subject) {
    s.send_keyed("alice", "bob", "hi", "k").await;
    assert_eq!(markers(&s, "bob").await, ["idempotency/bob/alice>bob k"]);
    s.store.delete_user("bob").await.unwrap();
    assert_eq!(
        s.store.footprint("bob").await.unwrap(),
        Vec::<String>::new()
    );

    // Alice's log still marks her key: her retry is a repeat there, and is stored in bob's new
    // log only, which is all that is delivered live.
    let delivered = s.delivered();
    let retry = s.send_keyed("alice", "bob", "hi", "k").await;
    assert_eq!(retry.repeat_of.as_deref(), Some("alice-bob-hi"));
    assert_eq!(retry.entries[0].seq, 1, "bob's new log");
    assert_eq!(s.texts("bob").await, ["hi"]);
    assert_eq!(s.texts("alice").await, ["hi"]);
    assert_eq!(s.delivered(), delivered + 1);
}
