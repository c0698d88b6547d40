//! The delivery worker of one webhook: reads its schedule from the outbox, POSTs each due alert
//! signed, at most `max_in_flight` at a time, and records each attempt's outcome as the retry
//! policy decides it.

use super::retry::RetryPolicy;
use super::signature::{sign, HEADER_ALERT_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use super::{Webhook, WorkerOptions};
use crate::alert::outbox::{AttemptOutcome, Job, Outbox, OutboxError};
use crate::time::Timestamp;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Ctx {
    outbox: Outbox,
    index: usize,
    webhook: Webhook,
    client: reqwest::Client,
    opts: WorkerOptions,
}

/// Starts the delivery worker for webhook `index` (its position in the names given to
/// [`Outbox::open`]). It runs until `cancel` fires. The `client` is shared by all workers; the
/// per-attempt timeout comes from the webhook's config.
pub fn spawn(
    outbox: Outbox,
    index: usize,
    webhook: Webhook,
    client: reqwest::Client,
    cancel: CancellationToken,
    opts: WorkerOptions,
) -> Result<JoinHandle<()>, OutboxError> {
    let notify = outbox.notifier(index)?;
    let ctx = Arc::new(Ctx {
        outbox,
        index,
        webhook,
        client,
        opts,
    });
    Ok(tokio::spawn(run(ctx, notify, cancel)))
}

async fn run(ctx: Arc<Ctx>, notify: Arc<tokio::sync::Notify>, cancel: CancellationToken) {
    let name = ctx.webhook.name.clone();
    let max = ctx.webhook.max_in_flight.max(1);
    let boot = ctx.outbox.now();
    // The start-up sweep gives every pending alert one attempt right away, whatever its stored
    // backoff: an outage of lienwatch should not add up to 10 minutes of delay.
    let mut sweep: Option<Vec<u8>> = None;
    let mut sweeping = true;
    let mut busy: HashSet<u64> = HashSet::new();
    let mut tasks: tokio::task::JoinSet<u64> = tokio::task::JoinSet::new();
    let mut task_seq: HashMap<tokio::task::Id, u64> = HashMap::new();
    tracing::info!(webhook = %name, "webhook worker started");

    loop {
        let now = ctx.outbox.now();
        let mut next_due: Option<Timestamp> = None;
        let mut start = |job: Job, busy: &mut HashSet<u64>| {
            busy.insert(job.seq);
            let seq = job.seq;
            let handle = tasks.spawn(attempt(ctx.clone(), job));
            task_seq.insert(handle.id(), seq);
        };
        if busy.len() < max {
            let horizon = ctx.opts.backoff_max;
            match ctx
                .outbox
                .due(ctx.index, now, horizon, &busy, max - busy.len())
            {
                Ok((jobs, next)) => {
                    next_due = next;
                    for job in jobs {
                        start(job, &mut busy);
                    }
                }
                Err(e) => tracing::error!(webhook = %name, error = %e, "reading the outbox"),
            }
        }
        if sweeping && busy.len() < max {
            match ctx.outbox.sweep(
                ctx.index,
                sweep.as_deref(),
                boot,
                &busy,
                max - busy.len(),
                ctx.opts.sweep_budget,
            ) {
                Ok((jobs, cursor)) => {
                    for job in jobs {
                        start(job, &mut busy);
                    }
                    sweeping = cursor.is_some();
                    sweep = cursor;
                }
                Err(e) => {
                    tracing::error!(webhook = %name, error = %e, "start-up sweep of the outbox");
                    sweeping = false;
                }
            }
        }
        metrics::gauge!("lienwatch_webhook_in_flight", "webhook" => name.clone())
            .set(busy.len() as f64);

        let poll = ctx.opts.poll_interval;
        let wait = if busy.len() >= max {
            poll // a finishing request wakes us
        } else if sweeping {
            Duration::ZERO
        } else {
            next_due.map_or(poll, |d| {
                Duration::from_millis(d.since(now).max(0) as u64).min(poll)
            })
        };
        if wait.is_zero() {
            tokio::task::yield_now().await;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let id = match done {
                    Ok((id, _)) => id,
                    Err(e) => {
                        tracing::error!(webhook = %name, error = %e, "delivery task failed");
                        e.id()
                    }
                };
                if let Some(seq) = task_seq.remove(&id) {
                    busy.remove(&seq);
                }
            }
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }

    // Let requests already sent finish briefly; anything abandoned stays pending on disk.
    let grace = ctx.opts.shutdown_grace;
    let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    metrics::gauge!("lienwatch_webhook_in_flight", "webhook" => name.clone()).set(0.0);
    tracing::info!(webhook = %name, "webhook worker stopped");
}

/// The error text without the URL (it may carry credentials), with its causes.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// One POST of one alert; records the outcome and returns the alert's seq.
async fn attempt(ctx: Arc<Ctx>, job: Job) -> u64 {
    let wh = &ctx.webhook;
    let at = ctx.outbox.now();
    let ts = at.secs();
    let started = Instant::now();
    let res = ctx
        .client
        .post(wh.url.clone())
        .timeout(wh.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(HEADER_ALERT_ID, job.alert_id.as_str())
        .header(HEADER_TIMESTAMP, ts.to_string())
        .header(HEADER_SIGNATURE, sign(&wh.secret, ts, &job.body))
        .body(job.body.clone())
        .send()
        .await;
    let result: Result<(), (String, &'static str)> = match res {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err((format!("HTTP {}", resp.status()), "http_error")),
        Err(e) if e.is_timeout() => Err((
            format!("timed out after {}", crate::duration::format(wh.timeout)),
            "timeout",
        )),
        Err(e) if e.is_connect() => Err((describe(e), "connect_error")),
        Err(e) => Err((describe(e), "error")),
    };
    metrics::histogram!("lienwatch_webhook_latency_seconds", "webhook" => wh.name.clone())
        .record(started.elapsed().as_secs_f64());
    let label = match &result {
        Ok(()) => "delivered",
        Err((_, l)) => l,
    };
    metrics::counter!("lienwatch_webhook_attempts_total", "webhook" => wh.name.clone(), "outcome" => label)
        .increment(1);

    let now = ctx.outbox.now();
    let policy = RetryPolicy {
        max_age: wh.max_age,
        base: ctx.opts.backoff_base,
        max: ctx.opts.backoff_max,
    };
    let outcome = policy.decide(result.map_err(|(e, _)| e), &job.record, now);
    match &outcome {
        AttemptOutcome::GiveUp { error } => {
            metrics::counter!("lienwatch_webhook_failed_total", "webhook" => wh.name.clone())
                .increment(1);
            tracing::warn!(webhook = %wh.name, alert = %job.alert_id, %error,
                "giving up on alert after max_age");
        }
        AttemptOutcome::Retry { error, .. } => {
            tracing::debug!(webhook = %wh.name, alert = %job.alert_id, %error,
                "delivery failed; will retry");
        }
        AttemptOutcome::Delivered => {}
    }
    if let Err(e) = ctx.outbox.record_attempt(ctx.index, job.seq, now, &outcome) {
        tracing::error!(webhook = %wh.name, alert = %job.alert_id, error = %e,
            "recording a delivery attempt");
    }
    job.seq
}
