//! The provider doubles, exercised over real HTTP the way the gateway's channels will call them:
//! one file of tests per provider, and here what both share.

mod qiuqiu;
mod wechat;

use loadtest::mock_channels::{QiuQiuDouble, WeChatDouble};
use serde_json::Value;
use std::time::Duration;

async fn post_json(url: &str, body: Value) -> Value {
    reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("calling the double")
        .json()
        .await
        .expect("a JSON answer")
}

#[tokio::test]
async fn a_dropped_double_stops_listening() {
    let wechat = WeChatDouble::start().await;
    let url = format!("{}/cgi-bin/token", wechat.base_url());
    assert!(reqwest::get(&url).await.is_ok());
    drop(wechat);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(client.get(&url).send().await.is_err());

    let qiuqiu = QiuQiuDouble::start().await;
    let url = format!("{}/v2/x/auth", qiuqiu.base_url());
    qiuqiu.shutdown().await;
    assert!(client.post(&url).send().await.is_err());
}
