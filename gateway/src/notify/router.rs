//! Deciding, for one notification, what each route does: in-app at once, and for WeChat and
//! 球球 whether, when and how a push is queued — by the kind's rule, the dedup window, the
//! user's consent, bindings and quiet hours, and whether the user is online.

use super::dedup::{self, alerts, Claimed};
use super::ledger::{AggregateJoin, Ledger, NewRecord};
use super::model::Job;
use super::quiet_hours::quiet_until;
use crate::log::accept::Messages;
use crate::observe::metrics::NotifyMetrics;
use crate::store::StoreError;
use broker_config::{
    KindRule, Notify, PreferredChannel, QiuQiuAction, QuietHoursAction, WeChatAction,
};
use chrono::{DateTime, Utc};
use protocol::notification::{
    Consent, Notification, Priority, Provider, QuietHours, Record, Route, RouteState, Status,
};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("unknown notification kind {0:?} (configured: {1})")]
    UnknownKind(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The providers a rule pushes through, the preferred one first.
pub fn push_providers(rule: &KindRule) -> Vec<Provider> {
    let mut providers = Vec::new();
    let wechat = rule.wechat != WeChatAction::None;
    let qiuqiu = rule.qiuqiu != QiuQiuAction::None;
    match rule.prefer {
        PreferredChannel::Wechat => {
            providers.extend(wechat.then_some(Provider::Wechat));
            providers.extend(qiuqiu.then_some(Provider::Qiuqiu));
        }
        PreferredChannel::Qiuqiu => {
            providers.extend(qiuqiu.then_some(Provider::Qiuqiu));
            providers.extend(wechat.then_some(Provider::Wechat));
        }
    }
    providers
}

/// The body of a notification's in-app message on `u/{user}/notify`.
#[derive(Serialize)]
struct InAppBody<'a> {
    notification: &'a Notification,
}

/// What the routing needs to know about the user at the moment of the decision.
pub struct UserState {
    pub online: bool,
    pub consent: Consent,
    pub quiet_hours: Option<QuietHours>,
    pub wechat_bound: bool,
    pub qiuqiu_bound: bool,
}

/// One notification to route, with what is known of its user.
pub struct Submission {
    pub notification: Notification,
    pub user: UserState,
}

pub struct Router<'a> {
    pub config: &'a Notify,
    pub ledger: &'a dyn Ledger,
    pub messages: &'a Messages,
    pub metrics: &'a NotifyMetrics,
    /// The WeChat channel is enabled with an app to broadcast from.
    pub can_broadcast: bool,
}

/// What a notification's claims found.
struct Claims {
    /// Its content was claimed now for its user.
    fresh: bool,
    /// For a broadcast with a tag and an app to send it: its content was claimed now for the
    /// tag.
    broadcast: Option<bool>,
    /// For a rule that delivers in-app, the seq it was stored at (none when deduplicated).
    in_app: Option<Option<u64>>,
}

/// A notification's decisions before they are stored.
struct Decided {
    record: NewRecord,
    /// The route whose push joins (or starts) the user's aggregated push of the kind.
    aggregate: Option<AggregateJoin>,
}

impl Router<'_> {
    /// Routes notifications together and records the decisions; returns each one's record (or
    /// why it was refused), in order. The batch costs one dedup claim and one ledger write, and
    /// its in-app appends share the message store's group commits: what makes many decisions a
    /// second affordable. Decisions are the same as routing each alone, in order.
    pub async fn route(
        &self,
        submissions: Vec<Submission>,
        now: DateTime<Utc>,
    ) -> Vec<Result<Record, RouteError>> {
        let now_ms = now.timestamp_millis() as u64;
        let mut results: Vec<Option<Result<Record, RouteError>>> =
            submissions.iter().map(|_| None).collect();
        let mut known = Vec::with_capacity(submissions.len());
        for (i, submission) in submissions.into_iter().enumerate() {
            match self.config.kinds.get(&submission.notification.kind) {
                Some(rule) => known.push((i, rule, submission)),
                None => {
                    let names: Vec<&str> = self.config.kinds.keys().map(String::as_str).collect();
                    let kind = submission.notification.kind.clone();
                    results[i] = Some(Err(RouteError::UnknownKind(kind, names.join(", "))));
                }
            }
        }
        let claiming: Vec<_> = (known.iter())
            .map(|(_, rule, s)| (*rule, &s.notification))
            .collect();
        let window = self.config.dedup_window;
        let claimed =
            dedup::claim_all(self.ledger, window, self.can_broadcast, &claiming, now_ms).await;
        // Where each known submission's answer goes; the submissions themselves move into
        // their records.
        let places: Vec<usize> = known.iter().map(|(i, _, _)| *i).collect();
        let decided = match &claimed {
            Ok(claimed) => self.decide_all(known, claimed, now, now_ms).await,
            Err(e) => Err(e.clone()),
        };
        // The records to store, and where each one's answer goes.
        let (mut records, mut answers) = (Vec::new(), Vec::new());
        match decided {
            Ok(decided) => {
                for (i, decided) in places.iter().zip(decided) {
                    match decided {
                        Ok(record) => {
                            records.push(record);
                            answers.push(*i);
                        }
                        Err(e) => results[*i] = Some(Err(e)),
                    }
                }
            }
            Err(e) => {
                for i in &places {
                    results[*i] = Some(Err(e.clone().into()));
                }
            }
        }
        let created = if records.is_empty() {
            Ok(Vec::new())
        } else {
            self.ledger.create(records).await
        };
        match created {
            Ok(stored) => {
                for (i, record) in answers.into_iter().zip(stored) {
                    for (route, state) in &record.routes {
                        self.metrics.count(route.as_str(), state.status.as_str());
                    }
                    results[i] = Some(Ok(record));
                }
            }
            Err(e) => {
                for i in answers {
                    results[i] = Some(Err(e.clone().into()));
                }
            }
        }
        if let Ok(claimed) = claimed {
            dedup::release_failed(self.ledger, &places, claimed, &results).await;
        }
        results
            .into_iter()
            .map(|r| r.expect("every submission is answered"))
            .collect()
    }

    /// Appends the fresh notifications in-app and decides each route; the aggregated pushes are
    /// joined last, all at once. An error of the whole batch (the aggregate joins) fails all;
    /// an in-app append fails its own notification only.
    async fn decide_all(
        &self,
        known: Vec<(usize, &KindRule, Submission)>,
        claimed: &Claimed,
        now: DateTime<Utc>,
        now_ms: u64,
    ) -> Result<Vec<Result<NewRecord, RouteError>>, StoreError> {
        let fresh = &claimed.fresh;
        // Queued all before waiting for any, so the store commits them together.
        let in_app: Vec<_> = known
            .iter()
            .zip(fresh)
            .map(|((_, rule, s), &fresh)| {
                (rule.in_app && fresh).then(|| {
                    let n = &s.notification;
                    let body = InAppBody { notification: n };
                    self.messages.accept_notification(&n.user, &n.id, &body)
                })
            })
            .collect();
        let mut decided: Vec<Result<Decided, RouteError>> = Vec::with_capacity(known.len());
        let claims = known
            .into_iter()
            .zip(fresh)
            .zip(&claimed.broadcast)
            .zip(in_app);
        for ((((_, rule, submission), &fresh), &broadcast), in_app) in claims {
            let in_app = match in_app {
                Some(accepting) => match accepting.wait().await {
                    Ok(stored) => Some(Some(stored.entries[0].seq)),
                    Err(e) => {
                        decided.push(Err(e.into()));
                        continue;
                    }
                },
                None => rule.in_app.then_some(None),
            };
            let claims = Claims {
                fresh,
                broadcast,
                in_app,
            };
            decided.push(Ok(self.decide(rule, submission, claims, now, now_ms)));
        }
        let joins: Vec<AggregateJoin> = decided
            .iter()
            .filter_map(|d| d.as_ref().ok()?.aggregate.clone())
            .collect();
        let mut joined = self.ledger.aggregate(&joins).await?.into_iter();
        Ok(decided
            .into_iter()
            .map(|decided| {
                let Decided {
                    mut record,
                    aggregate,
                } = decided?;
                if let Some(join) = aggregate {
                    let (job, new) = joined.next().expect("one answer per join");
                    let state = record.record.routes.get_mut(&Route::Push(join.provider));
                    if let (false, Some(state)) = (new, state) {
                        state.status = Status::Aggregated;
                        state.detail = Some(format!("aggregated into {}", job.notification));
                    }
                }
                Ok(record)
            })
            .collect())
    }

    /// The routes of one notification, given what its claims found.
    fn decide(
        &self,
        rule: &KindRule,
        submission: Submission,
        claims: Claims,
        now: DateTime<Utc>,
        now_ms: u64,
    ) -> Decided {
        let (notification, user) = (&submission.notification, &submission.user);
        let Claims {
            fresh,
            broadcast,
            in_app,
        } = claims;
        let job = |provider| Job {
            notification: notification.id.clone(),
            provider,
            user: notification.user.clone(),
            attempts: 0,
            count: 0,
        };
        let duplicate = || {
            RouteState::new(
                Status::Deduplicated,
                Some("the same content was sent within the dedup window".into()),
            )
        };
        let mut routes = BTreeMap::new();
        let mut jobs = Vec::new();
        let mut aggregate = None;
        if let Some(seq) = in_app {
            let state = match seq {
                Some(seq) => RouteState::new(Status::Delivered, Some(format!("seq {seq}"))),
                None => duplicate(),
            };
            routes.insert(Route::InApp, state);
        }

        let urgent = notification.priority == Priority::Urgent || rule.always_urgent;
        let quiet = match (&user.quiet_hours, urgent) {
            (Some(hours), false) => quiet_until(hours, now).ok().flatten(),
            _ => None,
        };
        let mut alerted_on: Option<Route> = None;
        for provider in push_providers(rule) {
            let route = Route::Push(provider);
            let (consented, bound) = match provider {
                Provider::Wechat => (user.consent.wechat, user.wechat_bound),
                Provider::Qiuqiu => (user.consent.qiuqiu, user.qiuqiu_bound),
            };
            let skip = |why: &str| RouteState::new(Status::Skipped, Some(why.to_string()));
            let state = if !fresh {
                duplicate()
            } else if provider == Provider::Wechat && rule.wechat == WeChatAction::MassSend {
                match (notification.wechat_tag, broadcast) {
                    (None, _) => skip("no wechat_tag to broadcast to"),
                    (Some(_), None) => skip("no WeChat app is enabled to broadcast from"),
                    (Some(tag), Some(true)) => {
                        jobs.push((job(provider), now_ms));
                        let mut state = RouteState::new(
                            Status::Queued,
                            Some(format!("a broadcast to WeChat tag {tag}")),
                        );
                        state.due_at = Some(now_ms);
                        state
                    }
                    (Some(tag), Some(false)) => RouteState::new(
                        Status::Deduplicated,
                        Some(format!(
                            "the broadcast to WeChat tag {tag} goes out with another notification"
                        )),
                    ),
                }
            } else if user.online && !rule.external_when_online {
                skip("a device is online: delivered in the app")
            } else if !consented {
                skip("no consent for this channel")
            } else if !bound {
                skip("no binding for this channel")
            } else if let (true, Some(first)) = (alerts(rule, route), alerted_on) {
                RouteState::new(
                    Status::Deduplicated,
                    Some(format!("the same content goes out on {}", first.as_str())),
                )
            } else if quiet.is_some() && rule.quiet_hours == QuietHoursAction::Drop {
                skip("quiet hours")
            } else {
                if alerts(rule, route) {
                    alerted_on = Some(route);
                }
                let held_until = quiet.map(|t| t.timestamp_millis() as u64);
                let mut due = held_until.unwrap_or(now_ms);
                let mut state = RouteState::new(
                    if held_until.is_some() {
                        Status::Held
                    } else {
                        Status::Queued
                    },
                    held_until.map(|_| "quiet hours".to_string()),
                );
                // An aggregated push is queued (or joined) by the ledger's aggregate; other
                // pushes are queued with the record.
                if provider == Provider::Qiuqiu && rule.qiuqiu == QiuQiuAction::Aggregate {
                    due = due.max(now_ms + self.config.aggregate_window.as_millis() as u64);
                    aggregate = Some(AggregateJoin {
                        user: notification.user.clone(),
                        kind: notification.kind.clone(),
                        notification: notification.id.clone(),
                        provider,
                        due_ms: due,
                    });
                } else {
                    jobs.push((job(provider), due));
                }
                state.due_at = Some(due);
                state
            };
            routes.insert(route, state);
        }
        Decided {
            record: NewRecord {
                record: Record {
                    notification: submission.notification,
                    routes,
                },
                jobs,
            },
            aggregate,
        }
    }
}
