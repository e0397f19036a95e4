//! Error answers as WeChat gives them: HTTP 200 with `errcode` and an `errmsg` ending in
//! ` rid: …`.

use crate::mock_channels::server::random_hex;
use serde_json::{json, Value};

/// The error reply for `errcode`, with WeChat's message for it.
pub(super) fn error(errcode: i64) -> Value {
    error_with(errcode, errmsg(errcode))
}

/// An error reply; like WeChat's, the message ends with ` rid: <request id>`.
pub(super) fn error_with(errcode: i64, message: &str) -> Value {
    let rid = format!("{}-{}-{}", random_hex(8), random_hex(8), random_hex(8));
    json!({"errcode": errcode, "errmsg": format!("{message} rid: {rid}")})
}

/// WeChat's message for `errcode`.
pub(super) fn errmsg(errcode: i64) -> &'static str {
    match errcode {
        -1 => "system error",
        40001 => "invalid credential, access_token is invalid or not latest",
        40002 => "invalid grant_type",
        40003 => "invalid openid",
        40008 => "invalid message type",
        40013 => "invalid appid",
        40014 => "invalid access_token",
        40037 => "invalid template_id",
        40125 => "invalid appsecret",
        41001 => "access_token missing",
        42001 => "access_token expired",
        43004 => "require subscribe",
        43101 => "user refuse to accept the msg",
        45009 => "reach max api daily quota limit",
        45011 => "api minute-quota reach limit  mustslower  retry next minute",
        45028 => "has no masssend quota",
        45065 => "clientmsgid exist",
        45066 => "clientmsgid retry too fast, please retry after 1 minute",
        45067 => "clientmsgid size out of limit",
        47001 => "data format error",
        47003 => "argument invalid!",
        _ => "error",
    }
}
