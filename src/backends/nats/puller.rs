//! The pull requests of one NATS subscription, all answered on one inbox.
//!
//! A JetStream pull consumer delivers nothing until it is asked: a request names how many messages it
//! wants and how long it waits for them, and the server sends them to the request's reply subject. Every
//! request of a subscription uses the same inbox subscription, opened once: a subscription per request
//! (what `PullConsumer::batch` does) costs a SUB, an UNSUB and a task to send it for every request, which
//! measured 13 % of the consuming task's time.
//!
//! Credits (see [`super::credits`]) bound what a subscription holds: one is taken for each message a
//! request asks for, and comes back when the message is settled, or when a request ends with fewer
//! messages than it asked for. Up to two requests are open at once: the next is sent as soon as the
//! threshold's credits are free again, so the server always has a request to fill while the engine works.
//! The server fills requests in the order it got them, so the inbox sees each request's messages, then its
//! end, in order, and the oldest open request is always the one a message or an end status belongs to.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::subject::Subject;
use async_nats::{Message, StatusCode, Subscriber};
use futures::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::error::{Result, ShoveError};
use crate::transport::lease::Ownership;

/// How long the server keeps a pull request waiting for messages.
pub(super) const PULL_EXPIRES: Duration = Duration::from_millis(300);
/// How long past its expiry a request is given for its end status before it is taken as lost (the server
/// restarted, or the connection dropped the status).
const LOST_AFTER: Duration = Duration::from_secs(1);
/// Requests open at once.
const OPEN_REQUESTS: usize = 2;

/// A pull request the server has not finished: how many messages it may still send.
struct Request {
    left: usize,
    /// When the request is taken as lost if it has not ended.
    lost_at: Instant,
}

/// What one wait of [`Puller::pull`] ended with.
enum Event {
    Message(Option<Message>),
    Lost,
    Credits(usize),
}

/// The pull requests of a subscription and the inbox their messages arrive on. Kept across `receive`
/// calls (state lives here, not in the future), so a dropped `receive` loses nothing.
pub(super) struct Puller {
    client: async_nats::Client,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    next_subject: String,
    /// The most messages one request asks for.
    batch: usize,
    /// How many credits must be free before another request is sent.
    threshold: usize,
    credits: Arc<Semaphore>,
    /// Opened on first use; `None` again after it closed.
    inbox: Option<(Subject, Subscriber)>,
    /// Open requests, oldest first.
    open: VecDeque<Request>,
    /// Messages that arrived for no open request (after one was taken as lost): their credits are owed
    /// and paid back before the next request.
    debt: usize,
}

impl Puller {
    pub(super) fn new(
        client: async_nats::Client,
        stream: &str,
        consumer: &str,
        batch: usize,
        threshold: usize,
        credits: Arc<Semaphore>,
    ) -> Self {
        Self {
            client,
            next_subject: format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            batch: batch.max(1),
            threshold: threshold.clamp(1, batch.max(1)),
            credits,
            inbox: None,
            open: VecDeque::new(),
            debt: 0,
        }
    }

    /// Waits until at least one message arrived, then appends it and whatever else has arrived, up to
    /// `max` in all. Requests are sent only while `owned` is held (a sequenced topic's standby waits).
    /// Returns without messages only when the credits semaphore closed.
    pub(super) async fn pull(&mut self, max: usize, owned: &Ownership, out: &mut Vec<Message>) -> Result<()> {
        self.check_connected()?;
        self.open_inbox().await?;
        loop {
            if self.open.is_empty() {
                owned.wait().await;
                if !self.pay_debt().await {
                    return Ok(());
                }
                let Some(count) = self.take_credits().await else {
                    return Ok(());
                };
                self.request(count).await?;
            }
            let may_add = self.open.len() < OPEN_REQUESTS && self.debt == 0 && owned.is_held();
            // Messages keep arriving while the engine works, and the select below prefers them: the next
            // request is sent as soon as its credits are free, not when the inbox runs dry.
            if may_add && let Some(count) = self.try_take_batch() {
                self.request(count).await?;
                continue;
            }
            let lost_at = self.open.front().map_or_else(Instant::now, |r| r.lost_at);
            let Some((_, inbox)) = self.inbox.as_mut() else {
                return Err(ShoveError::Connection("the NATS pull inbox is not open".into()));
            };
            let event = tokio::select! {
                biased;
                m = inbox.next() => Event::Message(m),
                _ = tokio::time::sleep_until(lost_at) => Event::Lost,
                taken = self.credits.acquire_many(self.threshold as u32), if may_add => match taken {
                    Ok(taken) => {
                        taken.forget();
                        Event::Credits(self.threshold + self.take_free(self.batch - self.threshold))
                    }
                    Err(_) => return Ok(()),
                },
            };
            match event {
                Event::Message(None) => {
                    self.inbox = None;
                    self.end_all();
                    return Err(ShoveError::Connection(
                        "the NATS subscription for pulled messages closed (connection shut down)".into(),
                    ));
                }
                Event::Message(Some(m)) => {
                    self.take(m, out)?;
                    // Take what has already arrived, without waiting.
                    while out.len() < max
                        && let Some(m) = self.arrived()
                    {
                        self.take(m, out)?;
                    }
                    if !out.is_empty() {
                        return Ok(());
                    }
                }
                Event::Lost => {
                    self.end_oldest();
                    // A request that got no answer: report a lost connection, so that the engine counts
                    // it against `max_reconnect_attempts` (the client keeps reconnecting meanwhile).
                    self.check_connected()?;
                }
                Event::Credits(count) => self.request(count).await?,
            }
        }
    }

    /// A [`ShoveError::Connection`] while the client is not connected to the server.
    fn check_connected(&self) -> Result<()> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(ShoveError::Connection(format!(
                "the NATS server is unreachable (connection {state:?}); the client keeps reconnecting"
            ))),
        }
    }

    /// For a closing subscription: sends no more requests, waits until the open ones ended, and returns
    /// every message that arrived meanwhile (or was waiting in the inbox), for the caller to hand back.
    pub(super) async fn drain(&mut self) -> Vec<Message> {
        let mut arrived = Vec::new();
        while let Some(lost_at) = self.open.front().map(|r| r.lost_at) {
            let Some((_, inbox)) = self.inbox.as_mut() else { break };
            tokio::select! {
                m = inbox.next() => match m {
                    Some(m) => {
                        let _ = self.take(m, &mut arrived);
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(lost_at) => self.end_oldest(),
            }
        }
        while let Some(m) = self.arrived() {
            let _ = self.take(m, &mut arrived);
        }
        self.open.clear();
        self.inbox = None;
        arrived
    }

    /// The next inbox message if one has already arrived.
    fn arrived(&mut self) -> Option<Message> {
        self.inbox.as_mut()?.1.next().now_or_never().flatten()
    }

    async fn open_inbox(&mut self) -> Result<()> {
        if self.inbox.is_none() {
            let subject = Subject::from(self.client.new_inbox());
            let subscriber = self
                .client
                .subscribe(subject.clone())
                .await
                .map_err(|e| ShoveError::Connection(format!("subscribing to a NATS inbox failed: {e}")))?;
            self.inbox = Some((subject, subscriber));
        }
        Ok(())
    }

    /// Takes at least one credit (waiting for it), then every credit free: how many messages to ask for.
    /// `None` when the semaphore closed. Cancel-safe: credits are taken only once the wait is over.
    async fn take_credits(&self) -> Option<usize> {
        self.credits.acquire().await.ok()?.forget();
        Some(1 + self.take_free(self.batch - 1))
    }

    /// The threshold's credits and every other free one (a request's worth in all), if the threshold's
    /// are free now.
    fn try_take_batch(&self) -> Option<usize> {
        self.credits.try_acquire_many(self.threshold as u32).ok()?.forget();
        Some(self.threshold + self.take_free(self.batch - self.threshold))
    }

    /// Takes up to `most` of the credits free now, without waiting: how many it took.
    fn take_free(&self, most: usize) -> usize {
        let n = self.credits.available_permits().min(most);
        match self.credits.try_acquire_many(n as u32) {
            Ok(t) => {
                t.forget();
                n
            }
            Err(_) => 0,
        }
    }

    /// Pays the credits owed for messages that came without a request. False when the semaphore closed.
    async fn pay_debt(&mut self) -> bool {
        while self.debt > 0 {
            match self.credits.acquire().await {
                Ok(p) => p.forget(),
                Err(_) => return false,
            }
            self.debt -= 1;
        }
        true
    }

    /// Asks the server for `count` messages. The request is counted as open before it is sent: if this
    /// future is dropped half-way, the request either reached the server or is taken as lost later.
    async fn request(&mut self, count: usize) -> Result<()> {
        let Some((inbox, _)) = self.inbox.as_ref() else {
            self.credits.add_permits(count);
            return Err(ShoveError::Connection("the NATS pull inbox is not open".into()));
        };
        let inbox = inbox.clone();
        self.open.push_back(Request {
            left: count,
            lost_at: Instant::now() + PULL_EXPIRES + LOST_AFTER,
        });
        let body = format!("{{\"batch\":{count},\"expires\":{}}}", PULL_EXPIRES.as_nanos());
        let sent = self
            .client
            .publish_with_reply(self.next_subject.clone(), inbox, body.into())
            .await;
        if let Err(e) = sent {
            if let Some(r) = self.open.pop_back() {
                self.credits.add_permits(r.left);
            }
            return Err(ShoveError::Connection(format!(
                "sending a NATS pull request failed: {e}"
            )));
        }
        Ok(())
    }

    /// Accounts for one inbox message: a delivery goes to `out`; a status ends the oldest request.
    fn take(&mut self, m: Message, out: &mut Vec<Message>) -> Result<()> {
        match m.status {
            None | Some(StatusCode::OK) => {
                match self.open.front_mut() {
                    Some(r) => {
                        r.left -= 1;
                        if r.left == 0 {
                            self.open.pop_front();
                        }
                    }
                    // Its request was taken as lost: the message still takes a credit.
                    None => match self.credits.try_acquire() {
                        Ok(p) => p.forget(),
                        Err(_) => self.debt += 1,
                    },
                }
                out.push(m);
                Ok(())
            }
            Some(StatusCode::IDLE_HEARTBEAT) => Ok(()),
            // The request expired, or the server ended it early, with fewer messages than asked for.
            Some(StatusCode::TIMEOUT | StatusCode::NOT_FOUND) => {
                self.end_oldest();
                Ok(())
            }
            Some(StatusCode::REQUEST_TERMINATED) => {
                self.end_oldest();
                match m.description.as_deref() {
                    Some(d @ ("Consumer Deleted" | "Consumer is push based")) => Err(ShoveError::Topology(format!(
                        "the NATS consumer cannot be pulled from: {d}; it is created when the consumer starts, \
                         so restart the consumer (or re-declare the topic)"
                    ))),
                    _ => Ok(()),
                }
            }
            Some(StatusCode::NO_RESPONDERS) => {
                self.end_all();
                Err(ShoveError::Connection(
                    "no JetStream consumer answered the pull request (is JetStream enabled, and does the \
                     consumer still exist?)"
                        .into(),
                ))
            }
            Some(other) => {
                self.end_oldest();
                Err(ShoveError::Connection(format!(
                    "NATS answered a pull request with status {other}: {}",
                    m.description.as_deref().unwrap_or("no description")
                )))
            }
        }
    }

    /// Ends the oldest open request, giving back the credits it did not use.
    fn end_oldest(&mut self) {
        if let Some(r) = self.open.pop_front() {
            self.credits.add_permits(r.left);
        }
    }

    fn end_all(&mut self) {
        while !self.open.is_empty() {
            self.end_oldest();
        }
    }
}
