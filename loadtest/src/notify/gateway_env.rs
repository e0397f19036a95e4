//! The gateway's configuration for a run: both channels pointed at the doubles, paced at
//! `--rate`, with no quota in the way. `--print-env` prints it for a gateway started by hand;
//! `--start-gateway` passes it to the one this tool starts.

use super::{KINDS, NO_QUOTA, WECHAT_APP};
use loadtest::mock_channels::{qiuqiu, wechat};

/// The started gateway's `notify.aggregate_window`: friend requests on 球球 go out once per
/// window, and the default minute would make every run wait a minute for its last aggregate.
const AGGREGATE_WINDOW: &str = "1s";

/// The gateway's environment for the doubles at these URLs and `rate` pushes per second.
pub(super) fn gateway_env(wechat_url: &str, qiuqiu_url: &str, rate: u32) -> Vec<(String, String)> {
    let templates = KINDS
        .iter()
        .map(|kind| format!("{kind} = \"T-{kind}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let wechat = format!(
        "{{enabled = true, base_url = \"{wechat_url}\", callback_token = \"{}\", apps = [{{name = \"{WECHAT_APP}\", appid = \"{}\", secret = \"{}\", templates = {{{templates}}}, per_second = {rate}, daily_quota = {NO_QUOTA}}}]}}",
        wechat::DEFAULT_CALLBACK_TOKEN,
        wechat::DEFAULT_APPID,
        wechat::DEFAULT_SECRET,
    );
    let qiuqiu = format!(
        "{{enabled = true, base_url = \"{qiuqiu_url}\", app_id = \"{}\", app_key = \"{}\", master_secret = \"{}\", per_second = {rate}, daily_quota = {NO_QUOTA}}}",
        qiuqiu::DEFAULT_APP_ID,
        qiuqiu::DEFAULT_APP_KEY,
        qiuqiu::DEFAULT_MASTER_SECRET,
    );
    [
        ("CHANNELS__WECHAT", wechat),
        ("CHANNELS__QIUQIU", qiuqiu),
        ("NOTIFY__AGGREGATE_WINDOW", AGGREGATE_WINDOW.to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (format!("GATEWAY__{key}"), value))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_points_both_channels_at_the_doubles() {
        let env = gateway_env("http://127.0.0.1:1", "http://127.0.0.1:2", 2000);
        let get = |key: &str| env.iter().find(|(k, _)| k == key).unwrap().1.clone();
        let wechat = get("GATEWAY__CHANNELS__WECHAT");
        assert!(
            wechat.contains("base_url = \"http://127.0.0.1:1\""),
            "{wechat}"
        );
        assert!(wechat.contains("per_second = 2000"), "{wechat}");
        assert!(
            wechat.contains("security_alert = \"T-security_alert\""),
            "{wechat}"
        );
        let qiuqiu = get("GATEWAY__CHANNELS__QIUQIU");
        assert!(
            qiuqiu.contains("base_url = \"http://127.0.0.1:2\""),
            "{qiuqiu}"
        );
        assert!(qiuqiu.contains("per_second = 2000"), "{qiuqiu}");
    }
}
