//! Pipelines on a Redis Cluster: one pipeline may hold commands for keys of many slots (a batch
//! of appends to many users' logs), which the redis crate sends to one node only. It is split
//! here into one pipeline per slot, sent at once, and the answers put back in the order asked.
//!
//! Within a slot the commands keep their order (they are one pipeline to one node); between
//! slots there is no order, as there is none between shards. A command without a key is sent in
//! every slot's pipeline at its place: `SCRIPT LOAD` must reach every node that runs the script,
//! and `WAIT` must wait on every node that took writes; `WAIT` is answered with the fewest
//! replicas any of them reached, anything else with the first slot's answer. A transaction
//! (`MULTI`) must stay within one slot and is sent as it is.

use futures_util::future::try_join_all;
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Arg, Cmd, Pipeline, RedisResult, Value};

/// Sends `pipeline`'s answers `offset..offset + count` as [`ConnectionLike`] asks, one pipeline
/// per slot.
pub(super) async fn send(
    redis: &mut ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    let slots: Vec<Option<Slot>> = pipeline.cmd_iter().map(slot_of).collect();
    let mut distinct: Vec<Slot> = Vec::new();
    for slot in slots.iter().flatten() {
        if !distinct.contains(slot) {
            distinct.push(*slot);
        }
    }
    if pipeline.is_transaction() || distinct.len() <= 1 {
        return redis.req_packed_commands(pipeline, offset, count).await;
    }
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let sends = distinct.iter().map(|&slot| {
        let mut part = redis::pipe();
        let mut places = Vec::new();
        for (place, (cmd, of)) in commands.iter().zip(&slots).enumerate() {
            if of.is_none() || *of == Some(slot) {
                part.add_command((*cmd).clone());
                places.push(place);
            }
        }
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
        answers[place] = Some(match (first, is_wait(commands[place])) {
            (None, _) => answer,
            (Some(Value::Int(a)), true) => match answer {
                Value::Int(b) => Value::Int(a.min(b)),
                other => other,
            },
            (Some(first), _) => first,
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

fn is_wait(cmd: &Cmd) -> bool {
    words(cmd)
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case(b"WAIT"))
}

/// The slot of a command's first key, or `None` for a command without one. Covers what the
/// gateway sends: commands whose first argument is a key, scripts (`EVALSHA sha numkeys key…`),
/// and the keyless `SCRIPT`, `WAIT` and `PING`.
fn slot_of(cmd: &Cmd) -> Option<Slot> {
    let mut words = words(cmd);
    let name = words.next()?.to_ascii_uppercase();
    match name.as_slice() {
        b"SCRIPT" | b"WAIT" | b"PING" => None,
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
    }
}
