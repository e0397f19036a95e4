//! The callbacks WeChat posts to the account's server once a send is done, which tests have
//! the double post: `TEMPLATESENDJOBFINISH` and `MASSSENDJOBFINISH`, in WeChat's XML envelope.

use super::{WeChatConfig, WeChatState};
use crate::mock_channels::server::{lock, Double};
use gateway::channel::wechat::callback;

impl Double<WeChatState> {
    /// Posts the `TEMPLATESENDJOBFINISH` event for `msgid` to `callback_url`, as WeChat does
    /// once a template message has been delivered or has failed. `status` is `success`,
    /// `failed:user block` or `failed: system failed`. `FromUserName` is the openid the message
    /// was sent to (`unknown` for a msgid the double never issued).
    pub async fn finish_job(
        &self,
        callback_url: &str,
        msgid: u64,
        status: &str,
    ) -> reqwest::Result<reqwest::Response> {
        let (config, openid) = {
            let state = lock(&self.state);
            let openid = state
                .sends
                .iter()
                .find(|send| send.msgid == Some(msgid))
                .map_or_else(|| "unknown".to_owned(), |send| send.touser.clone());
            (state.config.clone(), openid)
        };
        let event = format!(
            "<FromUserName><![CDATA[{openid}]]></FromUserName>\
             <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>\
             <MsgID>{msgid}</MsgID>\
             <Status><![CDATA[{status}]]></Status>"
        );
        post_event(callback_url, &config, &event).await
    }

    /// Posts the `MASSSENDJOBFINISH` event for mass send `msg_id` to `callback_url`, as WeChat
    /// does once it went out: `status` is `send success`, `send fail` or `err(<code>)` (refused
    /// by review); `reach` is (TotalCount, SentCount, ErrorCount), FilterCount their sum.
    pub async fn finish_mass_job(
        &self,
        callback_url: &str,
        msg_id: u64,
        status: &str,
        (total, sent, errors): (u64, u64, u64),
    ) -> reqwest::Result<reqwest::Response> {
        let config = lock(&self.state).config.clone();
        let filtered = sent + errors;
        let event = format!(
            "<FromUserName><![CDATA[oSystem]]></FromUserName>\
             <Event><![CDATA[MASSSENDJOBFINISH]]></Event>\
             <MsgID>{msg_id}</MsgID>\
             <Status><![CDATA[{status}]]></Status>\
             <TotalCount>{total}</TotalCount><FilterCount>{filtered}</FilterCount>\
             <SentCount>{sent}</SentCount><ErrorCount>{errors}</ErrorCount>"
        );
        post_event(callback_url, &config, &event).await
    }
}

/// Posts an event to the account's callback URL, in WeChat's XML envelope, signed as WeChat
/// signs: `signature`, `timestamp` and a fresh `nonce` in the query.
async fn post_event(
    callback_url: &str,
    config: &WeChatConfig,
    event: &str,
) -> reqwest::Result<reqwest::Response> {
    let create_time = gateway::infra::time::unix_seconds();
    let (timestamp, nonce) = (create_time.to_string(), rand::random::<u32>().to_string());
    let signature = callback::signature(&config.callback_token, &timestamp, &nonce);
    let original_id = &config.original_id;
    let xml = format!(
        "<xml><ToUserName><![CDATA[{original_id}]]></ToUserName>\
         <CreateTime>{create_time}</CreateTime>\
         <MsgType><![CDATA[event]]></MsgType>{event}</xml>"
    );
    reqwest::Client::new()
        .post(callback_url)
        .query(&[
            ("signature", signature),
            ("timestamp", timestamp),
            ("nonce", nonce),
        ])
        .header(reqwest::header::CONTENT_TYPE, "text/xml")
        .body(xml)
        .send()
        .await
}
