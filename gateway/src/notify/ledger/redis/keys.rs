//! The Redis ledger's keys.

/// One shard of the queue: its keys share the hash tag `{queue:N}`, so that the scripts that
/// keep them consistent touch one slot of a Redis Cluster. A user's pushes are all in the
/// shard [`QueueKeys::of_user`] picks, with the user's aggregates and set of jobs.
pub(super) struct QueueKeys {
    /// The due pushes: a sorted set, job key → when it is due (ms).
    pub queue: String,
    /// Job key → job (JSON).
    pub jobs: String,
    /// User 0 kind → key of the pending aggregated job.
    pub aggregates: String,
    /// Job key → its field in `aggregates`.
    pub aggregated: String,
    tag: String,
}

impl QueueKeys {
    pub(super) fn shard(shard: u32) -> Self {
        let tag = format!("gw:notify:{{queue:{shard}}}");
        Self {
            queue: format!("{tag}:queue"),
            jobs: format!("{tag}:jobs"),
            aggregates: format!("{tag}:aggregates"),
            aggregated: format!("{tag}:aggregated"),
            tag,
        }
    }

    /// The shard of `user`'s pushes, among `shards`: a hash every node computes alike.
    pub(super) fn of_user(user: &str, shards: u32) -> Self {
        // FNV-1a: stable across builds and platforms, unlike the standard library's hasher.
        let hash = (user.bytes()).fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        Self::shard((hash % u64::from(shards.max(1))) as u32)
    }

    /// The set of `user`'s queued job keys, so deleting the user finds them without reading
    /// the whole queue.
    pub(super) fn jobs_of(&self, user: &str) -> String {
        format!("{}:of:{user}", self.tag)
    }
}

/// A day's quota count outlives the day (in any provider's time zone), then goes by itself.
pub(super) const QUOTA_TTL_SECS: u64 = 2 * 24 * 60 * 60;

/// How often a record rewrite is tried again after another node changed the record between its
/// read and its write. Contention is between the few routes and delivery reports of one
/// notification, so running out means something is wrong.
pub(super) const REWRITE_ATTEMPTS: usize = 16;

/// How many dedup claims deleting a user removes per request.
pub(super) const CLAIMS_PAGE: isize = 512;

/// The keys of one user.
pub(super) struct UserKeys {
    pub user: String,
    pub quiet: String,
    pub consent: String,
    pub bindings: String,
    pub claims: String,
    /// The ids of the user's notification records, for deleting the user.
    pub records: String,
}

impl UserKeys {
    pub(super) fn of(user: &str) -> Self {
        Self {
            user: user.to_string(),
            quiet: format!("gw:{{{user}}}:notify:quiet"),
            consent: format!("gw:{{{user}}}:notify:consent"),
            bindings: format!("gw:{{{user}}}:notify:bindings"),
            claims: format!("gw:{{{user}}}:notify:claims"),
            records: format!("gw:{{{user}}}:notify:records"),
        }
    }

    pub(super) fn claim(&self, key: &str) -> String {
        format!("gw:{{{}}}:notify:dedup:{key}", self.user)
    }
}

pub(super) fn record_key(id: &str) -> String {
    format!("gw:notify:record:{id}")
}

pub(super) fn provider_key(provider_id: &str) -> String {
    format!("gw:notify:provider:{provider_id}")
}

pub(super) fn quota_key(quota: &str, day: &str) -> String {
    format!("gw:notify:quota:{quota}:{day}")
}

/// The associated data the bindings are sealed with: the embedded ledger's key for them.
pub(super) fn bindings_aad(user: &str) -> Vec<u8> {
    [b"bindings\0", user.as_bytes()].concat()
}
