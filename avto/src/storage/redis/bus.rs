//! The bus between instances: Redis pub/sub on `{p}bus`, and the key `{p}ui:watching` that says
//! a dashboard stream is open on some instance (see [`crate::storage::Bus::set_watching`]).
//!
//! Publishing uses the data connection. Each instance subscribes on a dedicated RESP3
//! connection whose manager resubscribes after a reconnect; a `PING` every second notices a
//! dead connection even when nothing is published.

use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::ConnectionManagerConfig;
use redis::{Msg, ProtocolVersion, PushKind};

use super::{to_json, RedisConn};
use crate::storage::{Bus, BusMessage, StorageError};

/// Publishes [`BusMessage`]s to every instance on the same Redis prefix.
#[derive(Debug, Clone)]
pub struct RedisBus {
    conn: RedisConn,
}

impl RedisBus {
    pub fn new(conn: RedisConn) -> Self {
        RedisBus { conn }
    }
}

impl Bus for RedisBus {
    fn publish(&self, msg: BusMessage) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            self.conn.query::<i64>(redis::cmd("PUBLISH").arg(self.conn.key("bus")).arg(to_json(&msg))).await?;
            Ok(())
        })
    }

    fn set_watching(&self, ttl: Duration) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let ms = (ttl.as_millis() as u64).max(1);
            let cmd = redis::cmd("SET").arg(self.conn.key("ui:watching")).arg(1).arg("PX").arg(ms).to_owned();
            self.conn.query::<()>(&cmd).await
        })
    }

    fn watched(&self) -> BoxFuture<'_, Result<bool, StorageError>> {
        Box::pin(async move {
            Ok(self.conn.query::<i64>(redis::cmd("EXISTS").arg(self.conn.key("ui:watching"))).await? > 0)
        })
    }
}

/// Subscribes to `{p}bus` and hands every message to `on_message` until the task is aborted.
pub(super) async fn subscribe(
    conn: &RedisConn,
    on_message: impl Fn(BusMessage) + Send + Sync + 'static,
) -> Result<tokio::task::JoinHandle<()>, StorageError> {
    let info = conn.inner.client.get_connection_info().clone();
    let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    let client = redis::Client::open(info.set_redis_settings(resp3))
        .map_err(|e| StorageError::Unavailable(format!("Redis bus: {e}")))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(1))
        .set_push_sender(tx)
        .set_automatic_resubscription();
    let mut manager = redis::aio::ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| StorageError::Unavailable(format!("Redis bus at {}: {e}", conn.inner.shown)))?;
    let channel = conn.key("bus");
    manager
        .subscribe(&channel)
        .await
        .map_err(|e| StorageError::Unavailable(format!("Redis bus: cannot subscribe: {e}")))?;
    let bus_conn = BusConn(manager.clone());
    *conn.bus_conn().lock() = Some(bus_conn);
    conn.sent();
    let conn = conn.clone();
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                push = rx.recv() => {
                    let Some(push) = push else { return };
                    if push.kind == PushKind::Disconnection {
                        tracing::warn!("Redis bus connection lost; reconnecting");
                        continue;
                    }
                    let Some(msg) = Msg::from_push_info(push) else { continue };
                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                    match serde_json::from_str::<BusMessage>(&payload) {
                        Ok(m) => on_message(m),
                        Err(e) => tracing::warn!(error = %e, "ignoring a malformed bus message"),
                    }
                }
                _ = tick.tick() => {
                    // Keeps the manager reconnecting (and resubscribing) after a connection loss.
                    let mut m = manager.clone();
                    conn.sent();
                    let _ = redis::cmd("PING").query_async::<redis::Value>(&mut m).await;
                }
            }
        }
    }))
}

/// The bus subscriber's connection (for `CLIENT ID` in connection-loss tests).
#[derive(Clone)]
pub(super) struct BusConn(pub(super) redis::aio::ConnectionManager);
