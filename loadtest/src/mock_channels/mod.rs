//! Test doubles of the providers behind the gateway's external push channels: the WeChat
//! Official Account API and the 球球 push API. They are real HTTP servers on local ports so
//! that the gateway is tested with its real HTTP client; e2e tests start them in-process, and
//! `loadtest mock-channels` runs both for trying the gateway by hand.

mod server;

pub mod qiuqiu;
pub mod wechat;

pub use qiuqiu::{QiuQiuConfig, QiuQiuDouble};
pub use server::{Double, Injection, Provider};
pub use wechat::{WeChatConfig, WeChatDouble};

use anyhow::{Context, Result};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Arguments of `loadtest mock-channels`.
#[derive(clap::Args, Debug)]
pub struct MockChannelsCmd {
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// Port of the WeChat double (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub wechat_port: u16,
    /// Port of the 球球 push double (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub qiuqiu_port: u16,
}

/// Runs both doubles with their default configuration until Ctrl-C, after printing one JSON
/// line with their addresses and credentials (what goes into the gateway's `[channels]`).
pub async fn run_cmd(cmd: &MockChannelsCmd) -> Result<bool> {
    let wechat = WeChatDouble::bind(
        SocketAddr::new(cmd.bind, cmd.wechat_port),
        WeChatConfig::default(),
    )
    .await
    .context("starting the WeChat double")?;
    let qiuqiu = QiuQiuDouble::bind(
        SocketAddr::new(cmd.bind, cmd.qiuqiu_port),
        QiuQiuConfig::default(),
    )
    .await
    .context("starting the 球球 push double")?;
    let wechat_config = wechat.config();
    let qiuqiu_config = qiuqiu.config();
    let line = json!({
        "wechat": {
            "base_url": wechat.base_url(),
            "appid": wechat_config.appid,
            "secret": wechat_config.secret,
            "original_id": wechat_config.original_id,
        },
        "qiuqiu": {
            "base_url": qiuqiu.base_url(),
            "app_id": qiuqiu_config.app_id,
            "app_key": qiuqiu_config.app_key,
            "master_secret": qiuqiu_config.master_secret,
        },
    });
    println!("{line}");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    wechat.shutdown().await;
    qiuqiu.shutdown().await;
    Ok(true)
}
