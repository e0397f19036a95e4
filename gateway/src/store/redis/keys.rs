//! The Redis store's keys: every key of a user carries the user as a hash tag.

/// The set of users that have a log.
pub(super) const USERS: &str = "gw:users";

/// How many stream entries the sweeper reads per request.
pub(super) const SWEEP_PAGE: usize = 512;

/// The keys of one user.
pub(super) struct UserKeys {
    pub log: String,
    pub head: String,
    pub cursors: String,
    pub forgotten: String,
    pub markers: String,
    pub marker_expiry: String,
    pub revoked: String,
    pub data_key: String,
    pub devices: String,
}

impl UserKeys {
    pub(super) fn of(user: &str) -> Self {
        Self {
            log: format!("gw:{{{user}}}:log"),
            head: format!("gw:{{{user}}}:head"),
            cursors: format!("gw:{{{user}}}:cursors"),
            forgotten: format!("gw:{{{user}}}:forgotten"),
            markers: format!("gw:{{{user}}}:idempotency"),
            marker_expiry: format!("gw:{{{user}}}:idempotency:expiry"),
            revoked: format!("gw:{{{user}}}:revoked"),
            data_key: format!("gw:{{{user}}}:data_key"),
            devices: format!("gw:{{{user}}}:devices"),
        }
    }
}
