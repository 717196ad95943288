//! `cryptobot run`: the order in which the guarantees are put in place.
//!
//! 1. lock (G1) — before any Telegram call; then the state store (the last handled update, G4);
//! 2. `getMe` — a rejected token is exit 78, READY=1 only after it succeeded; with the PostgreSQL lease,
//!    a standby until the lease is ours (READY with STATUS=standby; /healthz and /metrics served on the
//!    listener meanwhile, everything else 503); then the mode: polling deletes a webhook this bot set
//!    earlier, webhook mode sets it (`setWebhook` with the secret);
//! 3. the outbound queue, the alert checker, the HTTP listener (with the webhook route in webhook mode);
//!    READY=1, the supervisor (STATUS=, WATCHDOG= fed by the loop's liveness: G5, status file);
//! 4. the update loop (or, in webhook mode, the keeper of the webhook route's liveness) until
//!    SIGTERM/SIGINT or a fatal failure;
//! 5. STOPPING=1, then close in reverse order of opening (`shutdown::Cleanup`): confirm the offset (G3),
//!    stop the supervisor, close the state store; the lock is released last, when `run` returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::bot::alerts;
use crate::bot::dispatch::Dispatcher;
use crate::bot::outbound::{Limits, Outbound, Wake};
use crate::bot::prices::CoinGecko;
use crate::bot::service::BotSettings;
use crate::bot::{Context, Service};
use crate::config::{Config, Coordination, Mode};
use crate::exit::{Code, Failure, Result};
use crate::http::{HttpState, StandbyServer};
use crate::instance::guard::InstanceGuard;
use crate::instance::holder;
use crate::instance::leadership::{self, LeaseEnd};
use crate::instance::status_file::StatusFile;
use crate::live_status::{LiveStatus, State};
use crate::reload::{self, ReloadSource};
use crate::shutdown::{self, Cleanup};
use crate::store::{PgStore, Store};
use crate::systemd::activation;
use crate::systemd::notify::Notifier;
use crate::systemd::watchdog::{self, Liveness};
use crate::telegram::client::Client;
use crate::telegram::poller::{Confirmation, Poller, PollerOptions, confirm_offset};

mod essential;
mod startup;
mod supervisor;

use startup::{enter_webhook_mode, get_me, leave_webhook_mode};
use supervisor::{supervise, write_status};

/// Runs the bot until it is stopped. Returns the failure that ended it, if any.
pub fn run(config: Config, reload: ReloadSource) -> Result<()> {
    let bot_id = config.token.bot_id();
    // Still single-threaded: take systemd's socket (and its LISTEN_* variables) before anything else.
    let activated = activation::activated_listener()?;
    let guard = InstanceGuard::acquire(&config.settings.runtime_dir, bot_id)?;
    let http = activation::http_listener(activated, config.settings.listen)?;
    if config.settings.webhook.mode == Mode::Webhook && http.is_none() {
        return Err(Failure::config(
            "mode = \"webhook\" needs an HTTP listener for Telegram to call: enable the socket (systemctl enable --now cryptobot.socket) or set listen (CRYPTOBOT_LISTEN)",
        ));
    }
    tracing::info!(
        bot_id,
        lock = %guard.path().display(),
        "instance lock held; cryptobot {} starting (token from {})",
        env!("CARGO_PKG_VERSION"),
        config.token_source
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::software(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(serve(&config, &guard, reload, http));
    // Release order: the runtime (and every task in it) first, the lock last.
    drop(runtime);
    drop(guard);
    result
}

/// What `run` opened before the runtime, and how to reload: handed to `serve_until_stopped`.
struct Inputs {
    http: Option<(std::net::TcpListener, activation::Origin)>,
    hup: tokio::signal::unix::Signal,
    reload_source: ReloadSource,
    /// How this process's PostgreSQL leadership ended, if it led.
    lease_end: Arc<LeaseEnd>,
}

async fn serve(
    config: &Config,
    guard: &InstanceGuard,
    reload_source: ReloadSource,
    http: Option<(std::net::TcpListener, activation::Origin)>,
) -> Result<()> {
    let bot_id = config.token.bot_id();
    let notifier = Notifier::from_env();
    let cancel = CancellationToken::new();
    shutdown::spawn_signal_listener(cancel.clone(), notifier.clone(), shutdown::STOP_BOUND)
        .map_err(|e| Failure::software(format!("cannot install signal handlers: {e}")))?;
    let hup = reload::take_sighup()
        .map_err(|e| Failure::software(format!("cannot install the SIGHUP handler: {e}")))?;
    let mut cleanup = Cleanup::new();
    let restart = Arc::new(AtomicBool::new(false));
    let lease_end = Arc::new(LeaseEnd::default());
    let outcome = serve_until_stopped(
        config,
        guard,
        &notifier,
        &cancel,
        &mut cleanup,
        &restart,
        Inputs {
            http,
            hup,
            reload_source,
            lease_end: Arc::clone(&lease_end),
        },
    )
    .await;
    // Whatever ended the run: STOPPING=1, then close everything newest first, each step bounded.
    notifier.stopping();
    cancel.cancel();
    let failed = cleanup.run(CLOSE_STEP_BOUND).await;
    if failed.is_empty() {
        tracing::info!(bot_id, "stopped cleanly");
    } else {
        tracing::warn!(bot_id, "stopped; these steps failed: {}", failed.join(", "));
    }
    if lease_end.is_lost() {
        return Err(leadership::lease_lost());
    }
    if let Some(request) = lease_end.handover() {
        return Err(leadership::handed_over(&request));
    }
    if outcome.is_ok() && restart.load(Ordering::SeqCst) {
        return Err(Failure::new(
            Code::Restart,
            "stopped for the restart an admin asked for (/restart); systemd starts the service again",
        ));
    }
    outcome
}

/// Bound of each closing step; with the drain of the update in hand, a stop stays under
/// `shutdown::STOP_BOUND` and the unit's `TimeoutStopSec=`.
const CLOSE_STEP_BOUND: Duration = Duration::from_secs(5);

/// Opens the resources (registering their closing in `cleanup`), then polls until stopped.
async fn serve_until_stopped(
    config: &Config,
    guard: &InstanceGuard,
    notifier: &Notifier,
    cancel: &CancellationToken,
    cleanup: &mut Cleanup,
    restart: &Arc<AtomicBool>,
    inputs: Inputs,
) -> Result<()> {
    let Inputs {
        http,
        hup,
        reload_source,
        lease_end,
    } = inputs;
    let bot_id = config.token.bot_id();
    let status = Arc::new(LiveStatus::new());
    let liveness = Arc::new(Liveness::new());
    let status_file = StatusFile::new(guard.runtime_dir(), bot_id);
    write_status(&status_file, &status);

    // One host: the SQLite state store, opened before anything talks to Telegram (a broken state
    // directory is a configuration error found at once). With the lease, the shared store is opened
    // by the leader, below.
    let local_store = match config.settings.coordination.coordination {
        Coordination::None => Some(Store::open_sqlite(&config.settings.state_dir).await?),
        Coordination::Postgres => None,
    };

    let watchdog_timeout = notifier.watchdog_timeout();
    let poll_timeout = watchdog::poll_timeout_for(config.settings.poll_timeout, watchdog_timeout);
    let client = Client::new(&config.token, &config.settings.api_url, poll_timeout)?;
    let Some(me) = get_me(&client, cancel, &status, &liveness).await? else {
        return Ok(()); // stopped before Telegram answered
    };
    tracing::info!(bot_id, username = %me.username(), "Telegram accepted the token");
    // Liveness window of /healthz: a long poll plus its margin, or the watchdog's timeout.
    let window = watchdog_timeout.unwrap_or(poll_timeout + crate::telegram::client::POLL_MARGIN);
    let http_state = HttpState {
        liveness: Arc::clone(&liveness),
        status: Arc::clone(&status),
        window,
    };
    // coordination = "postgres": a standby until the lease is ours (G2); everything below is the leader's.
    // A standby serves /healthz and /metrics (role "standby") on the listener meanwhile.
    let leadership = match (
        &config.settings.coordination.coordination,
        &config.database_url,
    ) {
        (Coordination::Postgres, Some(url)) => {
            let standby_http = match &http {
                Some((listener, _)) => Some(
                    StandbyServer::start(listener, http_state.clone(), cancel).map_err(|e| {
                        Failure::io(format!("cannot serve the HTTP listener as a standby: {e}"))
                    })?,
                ),
                None => None,
            };
            let acquired = leadership::acquire(
                url,
                lease_end,
                bot_id,
                config.settings.coordination.lease_ttl,
                &status,
                &liveness,
                notifier,
                cancel,
            )
            .await;
            if let Some(server) = standby_http {
                server.stop().await;
            }
            match acquired? {
                Some(leadership) => Some(Arc::new(leadership)),
                None => return Ok(()), // stopped while a standby
            }
        }
        _ => None,
    };
    if let Some(leader) = &leadership {
        let renewer = leader.spawn_renewer(bot_id, cancel.clone());
        let control = leader.spawn_control_listener(bot_id, cancel.clone());
        let leader = Arc::clone(leader);
        cleanup.push("lease release", move || async move {
            renewer.abort();
            control.abort();
            leader.release().await
        });
    }
    let store = match (local_store, &leadership) {
        (Some(store), _) => store,
        (None, Some(leader)) => Store::Postgres(PgStore::new(
            Arc::clone(&leader.lease),
            leader.epoch,
            leader.on_lost(cancel.clone()),
        )),
        (None, None) => {
            return Err(Failure::config(
                "coordination = \"postgres\" needs the database URL (credential database_url, database_url_file or CRYPTOBOT_DATABASE_URL)",
            ));
        }
    };
    {
        let store = store.clone();
        cleanup.push("state store", move || async move {
            store.close().await;
            Ok(())
        });
    }
    let handled_before = store
        .recent_updates(bot_id, crate::store::RECENT_UPDATES)
        .await
        .map_err(|e| Failure::io(format!("{}: cannot read it ({e})", store.describe())))?;
    let lease_window = leadership.as_ref().map(|l| Arc::clone(&l.window));
    let role = match &leadership {
        Some(l) => format!("leader (PostgreSQL lease, epoch {})", l.epoch),
        None => "single instance (flock)".to_owned(),
    };

    let mode = config.settings.webhook.mode;
    let webhook = match mode {
        Mode::Polling => {
            leave_webhook_mode(&client, &store, bot_id, config.settings.delete_webhook).await;
            None
        }
        Mode::Webhook => {
            match enter_webhook_mode(config, &client, &store, cancel, &status, &liveness).await? {
                Some(secret) => Some(secret),
                None => return Ok(()), // stopped before Telegram answered
            }
        }
    };
    if let Err(e) = client
        .set_my_commands(crate::bot::commands::bot_commands())
        .await
    {
        tracing::warn!(
            bot_id,
            "could not publish the command list (setMyCommands): {e}"
        );
    }

    let context = Context {
        username: me.username().to_owned(),
        host: holder::hostname(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION"),
        started: status.started,
        role,
    };
    if let Some((last, _)) = handled_before.last() {
        tracing::info!(
            bot_id,
            update_id = last,
            remembered = handled_before.len(),
            "the last update handled by an earlier process"
        );
    }

    // Every message leaves through the outbound queue.
    let wake = Arc::new(Wake::default());
    let outbound = Outbound {
        store: store.clone(),
        client: client.clone(),
        bot_id,
        limits: Limits {
            max_in_flight: config.settings.pipeline.sends_in_flight,
            ..Limits::default()
        },
        wake: Arc::clone(&wake),
        status: Arc::clone(&status),
        lease: lease_window.clone(),
    };
    // The sender, the alert checker and the HTTP server must not end while the bot runs: one that
    // does stops the process (exit 70), and systemd restarts it.
    let essentials = essential::Essentials::default();
    // The queue stops only in its closing step, after the update source drained: the replies of the
    // last handlers (a /restart's own) are in the outbox by then and go out within its drain.
    let outbound_stop = CancellationToken::new();
    let sender = essentials.spawn("outbound queue", cancel, {
        let stop = outbound_stop.clone();
        async move {
            outbound.run(stop).await;
            Ok(())
        }
    });
    cleanup.push("outbound queue", move || async move {
        outbound_stop.cancel();
        sender.await.map_err(|e| e.to_string())?
    });

    // The alert checker: a singleton job, run here because this process holds the lock.
    let bot_options = &config.settings.bot;
    let prices = Arc::new(
        CoinGecko::new(
            bot_options.price_api_url.clone(),
            config.price_api_key.clone(),
            bot_options.price_cache_ttl,
        )
        .map_err(Failure::software)?
        .observed_by(Arc::clone(&status)),
    );
    let (bot_settings, settings_rx) =
        tokio::sync::watch::channel(Arc::new(BotSettings::from_options(bot_options)));
    let checker = essentials.spawn("alert checker", cancel, {
        let checker = alerts::Checker {
            store: store.clone(),
            prices: Arc::clone(&prices),
            bot_id,
            interval: bot_options.alert_interval,
            outbox: Arc::clone(&wake),
            status: Arc::clone(&status),
            settings: settings_rx.clone(),
        }
        .run(cancel.clone());
        async move {
            checker.await;
            Ok(())
        }
    });
    cleanup.push("alert checker", move || async move {
        checker.await.map_err(|e| e.to_string())?
    });
    let service = Service {
        prices,
        store,
        settings: settings_rx,
        context,
        status: Arc::clone(&status),
        bot_id,
        restart_requested: Arc::clone(restart),
        price_limiter: crate::bot::prices::ChatLimiter::new(),
        group_admins: Arc::new(crate::bot::group_admins::GroupAdmins::new(client.clone())),
        stop: cancel.clone(),
    };
    let dispatcher = Dispatcher::new(
        service,
        wake,
        Arc::clone(&liveness),
        crate::bot::dispatch::RecentUpdates::new(handled_before),
        crate::bot::dispatch::Concurrency::with_workers(config.settings.pipeline.concurrent_chats),
        cancel.clone(),
    );
    // What an earlier process accepted but did not handle goes first.
    dispatcher.recover().await?;
    // Webhook mode: the dispatcher is shared by the route and the keeper that feeds the watchdog.
    let credentials = webhook.clone().map(|secret| {
        Arc::new(std::sync::RwLock::new(crate::webhook::Credentials::new(
            secret,
        )))
    });
    let webhook_routes = credentials.as_ref().map(|credentials| {
        crate::webhook::router(crate::webhook::Inbound {
            dispatcher: dispatcher.clone(),
            credentials: Arc::clone(credentials),
            status: Arc::clone(&status),
            liveness: Arc::clone(&liveness),
            bot_id,
        })
    });
    let webhook_routes_set = webhook_routes.is_some();
    if let Some((listener, origin)) = http {
        let state = http_state;
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let what = if webhook_routes.is_some() {
            "Telegram's webhook route, /healthz and /metrics"
        } else {
            "/healthz and /metrics"
        };
        tracing::info!(bot_id, "serving {what} on {addr} ({origin:?})");
        let serve = crate::http::serve(listener, state, webhook_routes, cancel.clone());
        let server = essentials.spawn("HTTP server", cancel, async move {
            serve.await.map_err(|e| e.to_string())
        });
        cleanup.push("http server", move || async move {
            server.await.map_err(|e| e.to_string())?
        });
    }

    reload::spawn(
        hup,
        reload_source,
        config.clone(),
        reload::Live {
            client: client.clone(),
            bot_settings,
            webhook: credentials.clone(),
        },
        notifier.clone(),
        cancel.clone(),
    );
    status.set_state(if webhook.is_some() {
        State::Webhook
    } else {
        State::Polling
    });
    notifier.ready(&status.status_line());
    let supervisor = tokio::spawn(supervise(
        notifier.clone(),
        Arc::clone(&liveness),
        Arc::clone(&status),
        status_file,
        watchdog_timeout,
        cancel.clone(),
    ));
    {
        let status = Arc::clone(&status);
        cleanup.push("supervisor", move || async move {
            status.set_state(State::Stopping);
            supervisor.await.map_err(|e| e.to_string())
        });
    }

    if webhook_routes_set {
        tracing::info!(bot_id, "receiving updates by webhook");
        // Beat at the pace the supervisor checks; handlers stuck longer starve the watchdog.
        let period = watchdog_timeout.map_or(Duration::from_secs(1), |wd| {
            (wd / 4).min(Duration::from_secs(1))
        });
        crate::webhook::keep_alive(Arc::clone(&liveness), period, cancel.clone()).await;
        // The stop: handlers in progress finish (bounded); the rest stays in the inbox.
        dispatcher
            .drain(crate::telegram::poller::DRAIN_BUDGET)
            .await;
        return dispatcher
            .failure()
            .or_else(|| essentials.failure())
            .map_or(Ok(()), Err);
    }
    let mut options = PollerOptions::new(
        poll_timeout,
        config.settings.conflict,
        config.settings.delete_webhook,
    );
    options.lease = lease_window.clone();
    let mut poller = Poller::new(client.clone(), options, dispatcher);
    {
        let offsets = poller.offsets();
        cleanup.push("offset confirmation", move || async move {
            if lease_window
                .as_ref()
                .is_some_and(|w| w.remaining().is_none())
            {
                // A successor may be polling already: a getUpdates of ours would end its poll (409).
                tracing::warn!(bot_id, "the lease is lost: the offset is left to the next leader");
                return Ok(());
            }
            match confirm_offset(&client, &offsets).await {
                Ok(Confirmation::Confirmed(next) | Confirmation::AlreadyConfirmed(next)) => {
                    tracing::info!(bot_id, offset = next, "offset confirmed to Telegram");
                    Ok(())
                }
                Ok(Confirmation::Sent(next)) => {
                    tracing::info!(
                        bot_id,
                        offset = next,
                        "offset sent to Telegram (it holds a repeated offset; not waiting for the answer)"
                    );
                    Ok(())
                }
                Ok(Confirmation::Nothing) => Ok(()),
                Err(e) => Err(format!(
                    "{e}; the next start skips what was handled, from the state store"
                )),
            }
        });
    }
    tracing::info!(
        bot_id,
        poll_timeout_s = poll_timeout.as_secs(),
        "polling for updates"
    );
    poller.run(cancel).await?;
    essentials.failure().map_or(Ok(()), Err)
}
