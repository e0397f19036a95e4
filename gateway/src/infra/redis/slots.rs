//! Pipelines on a Redis Cluster: one pipeline may hold commands for keys of many slots (a batch
//! of appends to many users' logs), which the redis crate sends to one node only. It is split
//! here into one pipeline per slot, sent at once, and the answers put back in the order asked.
//!
//! Within a slot the commands keep their order (they are one pipeline to one node); between
//! slots there is no order, as there is none between shards. A command without a key is sent in
//! every slot's pipeline at its place: `SCRIPT LOAD` must reach every node that runs the script,
//! and `WAIT` and `WAITAOF` must wait on every node that took writes; they are answered with the
//! fewest any of them counted (`WAITAOF`: local and replicas each), anything else with the first
//! slot's answer. A transaction
//! (`MULTI`) must stay within one slot and is sent as it is.

use futures_util::future::try_join_all;
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Arg, Cmd, Pipeline, RedisResult, Value};
use std::collections::{HashMap, HashSet};

/// Sends `pipeline`'s answers `offset..offset + count` as [`ConnectionLike`] asks, one pipeline
/// per slot.
pub(super) async fn send(
    redis: &mut ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    let slots: Vec<Option<Slot>> = pipeline.cmd_iter().map(slot_of).collect();
    let distinct: HashSet<Slot> = slots.iter().flatten().copied().collect();
    if pipeline.is_transaction() || distinct.len() <= 1 {
        return redis.req_packed_commands(pipeline, offset, count).await;
    }
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    // One pass over the commands: each part, made when its slot first comes, starts with the
    // keyless commands that came before, and gets every later one at its place.
    let mut parts: Vec<(Slot, Pipeline, Vec<usize>)> = Vec::with_capacity(distinct.len());
    let mut part_of: HashMap<Slot, usize> = HashMap::with_capacity(distinct.len());
    let mut keyless: Vec<usize> = Vec::new();
    for (place, (cmd, slot)) in commands.iter().zip(&slots).enumerate() {
        match slot {
            None => {
                keyless.push(place);
                for (_, part, places) in &mut parts {
                    part.add_command((*cmd).clone());
                    places.push(place);
                }
            }
            Some(slot) => {
                let at = *part_of.entry(*slot).or_insert_with(|| {
                    let mut part = redis::pipe();
                    for &earlier in &keyless {
                        part.add_command(commands[earlier].clone());
                    }
                    parts.push((*slot, part, keyless.clone()));
                    parts.len() - 1
                });
                let (_, part, places) = &mut parts[at];
                part.add_command((*cmd).clone());
                places.push(place);
            }
        }
    }
    let sends = parts.into_iter().map(|(slot, part, places)| {
        let route = SingleNodeRoutingInfo::SpecificNode(Route::with_slot(slot, SlotAddr::Master));
        let mut redis = redis.clone();
        async move {
            let count = places.len();
            let answers = redis.route_pipeline(part, 0, count, route).await?;
            RedisResult::Ok(places.into_iter().zip(answers).collect::<Vec<_>>())
        }
    });
    let mut answers: Vec<Option<Value>> = vec![None; commands.len()];
    for (place, answer) in try_join_all(sends).await?.into_iter().flatten() {
        let first = answers[place].take();
        answers[place] = Some(match first {
            None => answer,
            Some(first) if is_wait(commands[place]) => fewest(first, answer),
            Some(first) => first,
        });
    }
    Ok(answers
        .into_iter()
        .map(|answer| answer.unwrap_or(Value::Nil))
        .skip(offset)
        .take(count)
        .collect())
}

/// The bytes of a command's arguments, its name first.
fn words(cmd: &Cmd) -> impl Iterator<Item = &[u8]> {
    cmd.args_iter().map(|arg| match arg {
        Arg::Simple(bytes) => bytes,
        _ => &[],
    })
}

/// `WAIT` or `WAITAOF`.
fn is_wait(cmd: &Cmd) -> bool {
    words(cmd).next().is_some_and(|name| {
        name.eq_ignore_ascii_case(b"WAIT") || name.eq_ignore_ascii_case(b"WAITAOF")
    })
}

/// Of two nodes' answers to a wait, the fewest: of two counts the smaller, of two `WAITAOF`
/// pairs each count's smaller; anything else (an error) wins.
fn fewest(a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Int(a), Value::Int(b)) => Value::Int(a.min(b)),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            Value::Array(a.into_iter().zip(b).map(|(a, b)| fewest(a, b)).collect())
        }
        (Value::Int(_) | Value::Array(_), other) => other,
        (error, _) => error,
    }
}

/// The slot of a command's first key, or `None` for a command without one. Covers what the
/// gateway sends: commands whose first argument is a key, scripts (`EVALSHA sha numkeys key…`),
/// and the keyless `SCRIPT`, `WAIT`, `WAITAOF` and `PING`.
fn slot_of(cmd: &Cmd) -> Option<Slot> {
    let mut words = words(cmd);
    let name = words.next()?.to_ascii_uppercase();
    match name.as_slice() {
        b"SCRIPT" | b"WAIT" | b"WAITAOF" | b"PING" => None,
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" => {
            let _script = words.next();
            let keys: usize = std::str::from_utf8(words.next()?).ok()?.parse().ok()?;
            (keys > 0).then(|| words.next().map(Slot::for_key))?
        }
        _ => words.next().map(Slot::for_key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_placed_by_its_first_key_and_a_script_by_its_first_key_argument() {
        let get = redis::cmd("GET").arg("gw:{alice}:head").clone();
        let append = redis::cmd("EVALSHA")
            .arg("abc")
            .arg(2)
            .arg("gw:{alice}:log")
            .arg("x")
            .clone();
        let other = redis::cmd("GET").arg("gw:{bob}:head").clone();
        assert_eq!(slot_of(&get), slot_of(&append));
        assert_ne!(slot_of(&get), slot_of(&other));
        assert_eq!(slot_of(&redis::cmd("WAIT").arg(1).arg(100).clone()), None);
        assert_eq!(
            slot_of(&redis::cmd("SCRIPT").arg("LOAD").arg("x").clone()),
            None
        );
        let keyless_script = redis::cmd("EVALSHA").arg("abc").arg(0).clone();
        assert_eq!(slot_of(&keyless_script), None);
        let waitaof = redis::cmd("WAITAOF").arg(1).arg(0).arg(100).clone();
        assert_eq!(slot_of(&waitaof), None);
        assert!(is_wait(&waitaof));
    }

    #[test]
    fn waits_are_answered_with_the_fewest_of_any_node() {
        assert_eq!(fewest(Value::Int(2), Value::Int(1)), Value::Int(1));
        let pair = |local, replicas| Value::Array(vec![Value::Int(local), Value::Int(replicas)]);
        assert_eq!(fewest(pair(1, 2), pair(0, 3)), pair(0, 2));
        assert_eq!(fewest(pair(1, 1), Value::Nil), Value::Nil);
        assert_eq!(fewest(Value::Nil, pair(1, 1)), Value::Nil);
    }
}
