//! Prometheus metrics (prometheus-client), served at `GET /metrics` in the text exposition format.
//!
//! Names follow Prometheus conventions: `cryptobot_` prefix, `_total` counters, `_seconds` histograms.
//! Recording is a few atomic operations; nothing here blocks the update loop.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A `kind` label (conflict kind, error kind).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: String,
}

/// A price request's source and outcome (`ok`, `rate_limited`, `unavailable`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PriceLabels {
    source: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: String,
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub updates_received: Counter,
    pub updates_handled: Counter,
    pub handler_seconds: Histogram,
    pub long_poll_seconds: Histogram,
    pub conflicts: Family<Kind, Counter>,
    pub api_errors: Family<Kind, Counter>,
    pub retries: Counter,
    pub messages_sent: Counter,
    /// Messages dropped unsent: refused for good by Telegram, or older than the outbox's expiry.
    pub messages_dropped: Family<Kind, Counter>,
    pub outbound_queue_depth: Gauge<i64, AtomicI64>,
    /// Chats whose sending state the outbound queue holds (forgotten once they hold nothing).
    pub outbound_chats: Gauge<i64, AtomicI64>,
    pub alerts_fired: Counter,
    price_requests: Family<PriceLabels, Counter>,
    /// When a price source last answered with prices (Unix time, seconds); 0 before the first.
    pub price_last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Times this process took the PostgreSQL lease (became the leader).
    pub lease_acquired: Counter,
    role: Family<RoleLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new("single")
    }
}

impl Metrics {
    /// `role`: "single" (flock only), or with the PostgreSQL lease "standby" until this process
    /// leads, then "leader" ([`Metrics::set_role`]).
    /// Changes the role label: the old series disappears, the new one is 1.
    pub fn set_role(&self, role: &str) {
        self.role.clear();
        self.role
            .get_or_create(&RoleLabel {
                role: role.to_owned(),
            })
            .set(1);
    }

    pub fn new(role: &str) -> Self {
        let mut registry = Registry::with_prefix("cryptobot");
        let m = Self {
            updates_received: Counter::default(),
            updates_handled: Counter::default(),
            handler_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            long_poll_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            conflicts: Family::default(),
            api_errors: Family::default(),
            retries: Counter::default(),
            messages_sent: Counter::default(),
            messages_dropped: Family::default(),
            outbound_queue_depth: Gauge::default(),
            outbound_chats: Gauge::default(),
            alerts_fired: Counter::default(),
            price_requests: Family::default(),
            price_last_success: Gauge::default(),
            lease_acquired: Counter::default(),
            role: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "updates_received",
            "Updates received from Telegram",
            m.updates_received.clone(),
        );
        registry.register(
            "updates_handled",
            "Updates whose handler finished",
            m.updates_handled.clone(),
        );
        registry.register(
            "handler_duration_seconds",
            "Time to handle one update",
            m.handler_seconds.clone(),
        );
        registry.register(
            "long_poll_duration_seconds",
            "Duration of getUpdates calls",
            m.long_poll_seconds.clone(),
        );
        registry.register(
            "conflicts",
            "409 conflicts by kind (other_poller, webhook_active)",
            m.conflicts.clone(),
        );
        registry.register(
            "api_errors",
            "Failed Bot API calls by kind",
            m.api_errors.clone(),
        );
        registry.register(
            "retries",
            "Bot API calls retried after a fault",
            m.retries.clone(),
        );
        registry.register(
            "messages_sent",
            "Messages accepted by Telegram",
            m.messages_sent.clone(),
        );
        registry.register(
            "messages_dropped",
            "Messages dropped unsent, by reason (refused: Telegram refused them for good; blocked: the user blocked the bot; expired: older than the outbox expiry)",
            m.messages_dropped.clone(),
        );
        registry.register(
            "outbound_queue_depth",
            "Messages waiting in the outbox",
            m.outbound_queue_depth.clone(),
        );
        registry.register(
            "outbound_chats",
            "Chats whose sending state the outbound queue holds: messages waiting or in flight, a 429 pause, or a bucket not yet full again",
            m.outbound_chats.clone(),
        );
        registry.register("alerts_fired", "Price alerts fired", m.alerts_fired.clone());
        registry.register(
            "price_requests",
            "Requests to a price source, by source and outcome (ok, rate_limited, unavailable)",
            m.price_requests.clone(),
        );
        registry.register(
            "price_last_success_timestamp_seconds",
            "When a price source last answered with prices (Unix time; 0: not yet)",
            m.price_last_success.clone(),
        );
        registry.register(
            "lease_acquired",
            "Times this process took the PostgreSQL lease and became the leader",
            m.lease_acquired.clone(),
        );
        m.set_role(role);
        registry.register(
            "role",
            "This instance's role (1 for the current one)",
            m.role.clone(),
        );
        let build: Family<BuildLabel, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("build_info", "Build information", build);
        Self { registry, ..m }
    }

    pub fn conflict(&self, kind: &str) {
        self.conflicts
            .get_or_create(&Kind {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn message_dropped(&self, reason: &str) {
        self.messages_dropped
            .get_or_create(&Kind {
                kind: reason.to_owned(),
            })
            .inc();
    }

    pub fn api_error(&self, kind: &str) {
        self.api_errors
            .get_or_create(&Kind {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// One request to the price source `source` ended with `outcome`; `ok` also moves
    /// `price_last_success_timestamp_seconds` to now.
    pub fn price_request(&self, source: &str, outcome: &str) {
        self.price_requests
            .get_or_create(&PriceLabels {
                source: source.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        if outcome == "ok" {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.price_last_success.set(now);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new("single");
        m.updates_handled.inc();
        m.conflict("other_poller");
        m.handler_seconds.observe(0.002);
        let text = m.encode();
        for name in [
            "cryptobot_updates_handled_total 1",
            "cryptobot_conflicts_total{kind=\"other_poller\"} 1",
            "cryptobot_handler_duration_seconds_bucket",
            "cryptobot_long_poll_duration_seconds_count",
            "cryptobot_role{role=\"single\"} 1",
            "cryptobot_build_info{version=\"0.1.0\"} 1",
            "cryptobot_outbound_queue_depth",
            "cryptobot_outbound_chats",
        ] {
            assert!(text.contains(name), "{name} missing in:\n{text}");
        }
    }

    #[test]
    fn the_role_follows_the_lease() {
        let m = Metrics::new("standby");
        assert!(m.encode().contains("cryptobot_role{role=\"standby\"} 1"));
        m.set_role("leader");
        let text = m.encode();
        assert!(text.contains("cryptobot_role{role=\"leader\"} 1"), "{text}");
        assert!(!text.contains("standby"), "the old role is gone: {text}");
    }
}
