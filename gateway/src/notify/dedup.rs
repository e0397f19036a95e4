//! The dedup window: the same content is pushed to a user at most once per
//! `notify.dedup_window`, across channels, retries and nodes. Each notification claims its
//! content (its dedup key) for its user in the ledger; a broadcast also claims it for its tag.

use super::ledger::{DedupClaim, Ledger};
use crate::store::StoreError;
use broker_config::{KindRule, QiuQiuAction, WeChatAction};
use protocol::notification::{Notification, Route};
use sha2::{Digest, Sha256};

/// Whether the route's action alerts the user with the notification's content: such pushes are
/// what the dedup window keeps to one across channels. A silent update or an aggregate (which
/// says "3 new requests", not this content) is not, nor a broadcast, which reaches whoever
/// follows its tag, not this user for sure.
pub fn alerts(rule: &KindRule, route: Route) -> bool {
    match route {
        Route::WECHAT => matches!(
            rule.wechat,
            WeChatAction::Template | WeChatAction::Subscribe
        ),
        Route::QIUQIU => matches!(rule.qiuqiu, QiuQiuAction::Push | QiuQiuAction::Popup),
        Route::InApp => false,
    }
}

/// The dedup key: the one given, else a hash of what the user would read.
pub fn dedup_key(notification: &Notification) -> String {
    match &notification.dedup_key {
        Some(key) => format!("k:{key}"),
        None => {
            let mut hash = Sha256::new();
            for part in [&notification.kind, &notification.title, &notification.body] {
                hash.update(part.as_bytes());
                hash.update([0]);
            }
            let digest = hash.finalize();
            format!("h:{}", hex::encode(digest))
        }
    }
}

/// Who claims a broadcast's content: the tag, under a name no user id can take.
fn broadcast_claimant(tag: u64) -> String {
    format!("#wechat-tag:{tag}")
}

/// What a batch's claims found, per notification.
pub(super) struct Claimed {
    pub fresh: Vec<bool>,
    /// For a broadcast with a tag and an app to send it: whether its tag's claim is fresh.
    pub broadcast: Vec<Option<bool>>,
    /// The claims each notification took now, to give up again should it fail.
    pub taken: Vec<Vec<DedupClaim>>,
}

/// Claims every notification's content for its user (and a broadcast's for its tag) in
/// one call; each notification comes with its kind's rule.
pub(super) async fn claim_all(
    ledger: &dyn Ledger,
    window: std::time::Duration,
    can_broadcast: bool,
    known: &[(&KindRule, &Notification)],
    now_ms: u64,
) -> Result<Claimed, StoreError> {
    let mut claims: Vec<DedupClaim> = known
        .iter()
        .map(|(_, notification)| DedupClaim {
            user: notification.user.clone(),
            key: dedup_key(notification),
            by: notification.id.clone(),
        })
        .collect();
    // A broadcast is claimed for its tag too: one mass send per tag and content, whichever
    // follower's notification carries it.
    let broadcasts: Vec<Option<usize>> = known
        .iter()
        .enumerate()
        .map(|(i, (rule, notification))| {
            let tag = notification.wechat_tag;
            let broadcasts = rule.wechat == WeChatAction::MassSend && can_broadcast;
            let tag = tag.filter(|_| broadcasts)?;
            let for_tag = DedupClaim {
                user: broadcast_claimant(tag),
                ..claims[i].clone()
            };
            claims.push(for_tag);
            Some(claims.len() - 1)
        })
        .collect();
    let window = window.as_millis() as u64;
    let granted = ledger.claim_dedup(&claims, now_ms, window).await?;
    let broadcast: Vec<Option<bool>> = broadcasts.iter().map(|b| b.map(|i| granted[i])).collect();
    let taken = (0..known.len())
        .map(|i| {
            let own = granted[i].then(|| claims[i].clone());
            let tag = broadcasts[i]
                .filter(|&b| granted[b])
                .map(|b| claims[b].clone());
            own.into_iter().chain(tag).collect()
        })
        .collect();
    Ok(Claimed {
        fresh: granted[..known.len()].to_vec(),
        broadcast,
        taken,
    })
}

/// Gives up the claims of the notifications that failed after claiming: their senders were
/// told to retry, and the retry must not find its content already claimed. A release that
/// fails leaves those claims to expire with their window.
pub(super) async fn release_failed<T, E>(
    ledger: &dyn Ledger,
    places: &[usize],
    claimed: Claimed,
    results: &[Option<Result<T, E>>],
) {
    let unused: Vec<DedupClaim> = places
        .iter()
        .zip(claimed.taken)
        .filter(|(i, _)| matches!(results[**i], Some(Err(_))))
        .flat_map(|(_, taken)| taken)
        .collect();
    if unused.is_empty() {
        return;
    }
    match ledger.release_dedup(&unused).await {
        Ok(()) => tracing::debug!(claims = unused.len(), "gave up the claims of failed notifications"),
        Err(e) => tracing::warn!(
            claims = unused.len(),
            "could not give up the dedup claims of failed notifications; they expire with their window: {e}"
        ),
    }
}
