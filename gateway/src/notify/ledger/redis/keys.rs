//! The Redis ledger's keys.

pub(super) const QUEUE: &str = "gw:notify:queue";
pub(super) const JOBS: &str = "gw:notify:jobs";
pub(super) const AGGREGATES: &str = "gw:notify:aggregates";
pub(super) const AGGREGATED: &str = "gw:notify:aggregated";

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
    pub jobs: String,
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
            jobs: format!("gw:{{{user}}}:notify:jobs"),
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
