//! Flow control: when every server is busy, requests wait at the router in
//! priority bands, taken in turn between tenants, each until its deadline.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::HeaderName;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The header that names a request's tenant (`x-tenant`).
pub const TENANT_HEADER: HeaderName = HeaderName::from_static("x-tenant");

/// The header that gives a request's deadline in milliseconds from its
/// arrival (`x-deadline-ms`).
pub const DEADLINE_HEADER: HeaderName = HeaderName::from_static("x-deadline-ms");

/// How the router holds requests when every server is busy.
///
/// A server is busy when it has as many of this router's requests as it
/// has batch slots, or when its fresh load report says it is saturated
/// (see [`Saturation`](crate::pick::llm::Saturation)). While every
/// available server is busy, a request waits in the router's queue:
///
/// * **bands**: one per priority (`x-priority`, 0 without it); a higher
///   band is always served first;
/// * **tenants**: inside a band, tenants (`x-tenant`, else a hash of the
///   `authorization` header) take turns, one request each (deficit round
///   robin with a cost of one request), and a tenant with nothing waiting
///   goes next; so a tenant that sends ten times more waits ten times
///   longer, not the others;
/// * **deadline**: a request that has waited past its deadline
///   (`x-deadline-ms`, else [`deadline`](Self::deadline)) leaves with
///   `503` and `Retry-After`;
/// * **bound**: past [`max_waiting`](Self::max_waiting) waiting requests,
///   the newest request of the lowest band is shed with `429` and
///   `Retry-After` (the arriving one, when its band is the lowest);
/// * a client that goes away leaves the queue at once.
///
/// ```
/// use std::time::Duration;
/// use tower_lb::llm::FlowControl;
///
/// let flow = FlowControl::new()
///     .max_waiting(512)
///     .deadline(Duration::from_secs(10))
///     .server_limit(Some(8));
/// # let _ = flow;
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct FlowControl {
    pub(crate) enabled: bool,
    pub(crate) max_waiting: usize,
    pub(crate) deadline: Duration,
    pub(crate) server_limit: Option<u32>,
    pub(crate) retry_after: Duration,
}

impl Default for FlowControl {
    fn default() -> Self {
        Self {
            enabled: true,
            max_waiting: 1024,
            deadline: Duration::from_secs(30),
            server_limit: None,
            retry_after: Duration::from_secs(1),
        }
    }
}

impl FlowControl {
    /// The defaults: 1,024 waiting requests at most, a 30 s deadline, each
    /// server's limit learnt from its reports, `Retry-After: 1`.
    pub fn new() -> Self {
        Self::default()
    }

    /// No queue: every request goes to the balancer at once, and a
    /// saturated fleet sheds low priorities with `429` as the picker
    /// decides.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// The most requests waiting at once, all bands together.
    pub fn max_waiting(mut self, max: usize) -> Self {
        self.max_waiting = max;
        self
    }

    /// How long a request without `x-deadline-ms` may wait in the queue.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The most requests this router sends one server at once. `None` (the
    /// default) learns it: the most running requests the server has
    /// reported, plus one to find out whether it can run more. A limit
    /// given here is also each server's batch slots for the time-to-first-
    /// token model ([`PrefillConfig::slots`](crate::endpoint::PrefillConfig::slots)):
    /// a request released from the queue goes to a server with a free slot
    /// rather than wait behind this router's own requests at a full one.
    pub fn server_limit(mut self, limit: Option<u32>) -> Self {
        self.server_limit = limit;
        self
    }

    /// The wait suggested in `Retry-After` to refused requests (1 s by
    /// default).
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = wait;
        self
    }
}

/// Why a request left the queue without being served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue was full and the request's band was the lowest.
    Shed,
    /// The request waited past its deadline.
    Deadline,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Shed => "the router's queue is full; retry later",
            Self::Deadline => "every server stayed busy until the request's deadline",
        })
    }
}

impl std::error::Error for Refused {}

/// The refusal with the wait to suggest, as the router's error chain holds
/// it.
#[derive(Debug)]
pub(crate) struct QueueError {
    pub(crate) refused: Refused,
    pub(crate) retry_after: Duration,
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.refused.fmt(f)
    }
}

impl std::error::Error for QueueError {}

/// One priority band's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BandStats {
    /// The band's priority.
    pub priority: i32,
    /// Requests waiting now.
    pub waiting: usize,
    /// Requests sent on, at once or after waiting.
    pub admitted: u64,
    /// Of those, the ones that waited.
    pub queued: u64,
    /// Total time waited by the admitted requests.
    pub waited: Duration,
    /// The longest wait of an admitted request.
    pub max_wait: Duration,
    /// Requests shed because the queue was full.
    pub shed: u64,
    /// Requests that waited past their deadline.
    pub expired: u64,
    /// Requests whose client went away while they waited.
    pub left: u64,
}

/// The queue's figures: requests sent on and not yet finished, and each
/// band that has seen a request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueStats {
    /// Requests admitted and not yet finished (their answer's body not yet
    /// ended).
    pub in_service: usize,
    /// How many the fleet takes now (`usize::MAX` without servers: requests
    /// go on and the balancer answers).
    pub capacity: usize,
    /// Every band seen, highest priority first.
    pub bands: Vec<BandStats>,
}

/// How many requests the fleet takes at once, read on every admission.
pub(crate) type Capacity = Box<dyn Fn() -> usize + Send + Sync>;

/// The queue shared by the router's clones.
pub(crate) struct Queue {
    state: Mutex<State>,
    capacity: Capacity,
    pub(crate) config: FlowControl,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    out: usize,
    waiting: usize,
    next_id: u64,
    bands: BTreeMap<i32, Band>,
    stats: BTreeMap<i32, BandStats>,
}

#[derive(Default)]
struct Band {
    tenants: HashMap<u64, VecDeque<Waiter>>,
    /// Tenants with waiting requests, in turn order.
    turn: VecDeque<u64>,
}

struct Waiter {
    id: u64,
    since: Instant,
    go: oneshot::Sender<Result<Permit, Refused>>,
}

/// Held by an admitted request until its answer ends; gives the slot back
/// and lets the next waiting request go.
pub(crate) struct Permit {
    queue: Option<Arc<Queue>>,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            let mut state = queue.lock();
            state.out = state.out.saturating_sub(1);
            queue.dispatch(&mut state);
        }
    }
}

impl Band {
    fn pop(&mut self) -> Option<(u64, Waiter)> {
        let tenant = self.turn.pop_front()?;
        let list = self.tenants.get_mut(&tenant)?;
        let waiter = list.pop_front()?;
        if list.is_empty() {
            self.tenants.remove(&tenant);
        } else {
            self.turn.push_back(tenant);
        }
        Some((tenant, waiter))
    }

    /// The newest request of the tenant with the most waiting.
    fn pop_newest(&mut self) -> Option<Waiter> {
        let (&tenant, _) = self.tenants.iter().max_by_key(|(_, list)| list.len())?;
        let list = self.tenants.get_mut(&tenant)?;
        let waiter = list.pop_back();
        if list.is_empty() {
            self.tenants.remove(&tenant);
            self.turn.retain(|t| *t != tenant);
        }
        waiter
    }

    fn remove(&mut self, tenant: u64, id: u64) -> bool {
        let Some(list) = self.tenants.get_mut(&tenant) else {
            return false;
        };
        let Some(at) = list.iter().position(|w| w.id == id) else {
            return false;
        };
        list.remove(at);
        if list.is_empty() {
            self.tenants.remove(&tenant);
            self.turn.retain(|t| *t != tenant);
        }
        true
    }

    fn is_empty(&self) -> bool {
        self.turn.is_empty()
    }
}

impl Queue {
    pub(crate) fn new(config: FlowControl, capacity: Capacity) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            capacity,
            config,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the fleet has room for a request of `priority` from
    /// `tenant`, or until `deadline`.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        priority: i32,
        tenant: u64,
        deadline: Instant,
    ) -> Result<Permit, Refused> {
        let (receiver, id) = {
            let mut state = self.lock();
            let now = Instant::now();
            if state.waiting == 0 && state.out < (self.capacity)() {
                state.out += 1;
                let stats = band_stats(&mut state, priority);
                stats.admitted += 1;
                return Ok(self.permit());
            }
            if state.waiting >= self.config.max_waiting {
                let lowest = state
                    .bands
                    .iter()
                    .find(|(_, band)| !band.is_empty())
                    .map(|(p, _)| *p);
                match lowest {
                    Some(lowest) if lowest < priority => {
                        let evicted = state.bands.get_mut(&lowest).and_then(Band::pop_newest);
                        if let Some(waiter) = evicted {
                            state.waiting -= 1;
                            band_stats(&mut state, lowest).shed += 1;
                            let _ = waiter.go.send(Err(Refused::Shed));
                        }
                    }
                    _ => {
                        band_stats(&mut state, priority).shed += 1;
                        return Err(Refused::Shed);
                    }
                }
            }
            let (go, receiver) = oneshot::channel();
            let id = state.next_id;
            state.next_id += 1;
            let band = state.bands.entry(priority).or_default();
            let list = band.tenants.entry(tenant).or_default();
            if list.is_empty() {
                // A tenant with nothing waiting has used less than its
                // share: it goes next (virtual time: its request starts
                // now, before the backlog of the others).
                band.turn.push_front(tenant);
            }
            list.push_back(Waiter { id, since: now, go });
            state.waiting += 1;
            band_stats(&mut state, priority);
            (receiver, id)
        };
        let mut leave = Leave {
            queue: self,
            priority,
            tenant,
            id,
            armed: true,
        };
        match tokio::time::timeout_at(deadline, receiver).await {
            Ok(Ok(verdict)) => {
                leave.armed = false;
                verdict
            }
            // The queue went away: not reachable while `self` lives.
            Ok(Err(_)) => {
                leave.armed = false;
                Err(Refused::Shed)
            }
            Err(_) => {
                leave.armed = false;
                let mut state = self.lock();
                if remove(&mut state, priority, tenant, id) {
                    band_stats(&mut state, priority).expired += 1;
                }
                Err(Refused::Deadline)
            }
        }
    }

    fn permit(self: &Arc<Self>) -> Permit {
        Permit {
            queue: Some(Arc::clone(self)),
        }
    }

    /// Lets waiting requests go while the fleet has room: the highest band
    /// first, tenants in turn.
    fn dispatch(self: &Arc<Self>, state: &mut State) {
        if state.waiting == 0 {
            return;
        }
        let capacity = (self.capacity)();
        while state.out < capacity && state.waiting > 0 {
            let Some((&priority, band)) = state.bands.iter_mut().rev().find(|(_, b)| !b.is_empty())
            else {
                break;
            };
            let Some((_, waiter)) = band.pop() else {
                break;
            };
            state.waiting -= 1;
            let waited = waiter.since.elapsed();
            match waiter.go.send(Ok(self.permit())) {
                Ok(()) => {
                    state.out += 1;
                    let stats = band_stats(state, priority);
                    stats.admitted += 1;
                    stats.queued += 1;
                    stats.waited += waited;
                    stats.max_wait = stats.max_wait.max(waited);
                }
                Err(verdict) => {
                    // The client went away: the permit was never counted.
                    if let Ok(mut permit) = verdict {
                        permit.queue = None;
                    }
                    band_stats(state, priority).left += 1;
                }
            }
        }
    }

    /// Lets waiting requests go if the fleet gained room (a server joined
    /// or reported a shorter queue): called on a timer.
    pub(crate) fn poke(self: &Arc<Self>) {
        let mut state = self.lock();
        self.dispatch(&mut state);
    }

    pub(crate) fn stats(&self) -> QueueStats {
        let state = self.lock();
        QueueStats {
            in_service: state.out,
            capacity: (self.capacity)(),
            bands: state
                .stats
                .values()
                .rev()
                .map(|stats| BandStats {
                    waiting: state
                        .bands
                        .get(&stats.priority)
                        .map_or(0, |b| b.tenants.values().map(VecDeque::len).sum()),
                    ..*stats
                })
                .collect(),
        }
    }
}

fn band_stats(state: &mut State, priority: i32) -> &mut BandStats {
    state.stats.entry(priority).or_insert_with(|| BandStats {
        priority,
        ..BandStats::default()
    })
}

fn remove(state: &mut State, priority: i32, tenant: u64, id: u64) -> bool {
    let removed = state
        .bands
        .get_mut(&priority)
        .is_some_and(|band| band.remove(tenant, id));
    if removed {
        state.waiting -= 1;
    }
    removed
}

/// Takes a waiting request out of the queue when its client goes away.
struct Leave<'a> {
    queue: &'a Arc<Queue>,
    priority: i32,
    tenant: u64,
    id: u64,
    armed: bool,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.queue.lock();
            if remove(&mut state, self.priority, self.tenant, self.id) {
                band_stats(&mut state, self.priority).left += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The queue's order, fairness, deadlines and bound, on tokio's paused
    //! clock with a capacity the test sets.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{FlowControl, Permit, Queue, Refused};

    fn queue(capacity: usize, config: FlowControl) -> (Arc<Queue>, Arc<AtomicUsize>) {
        let room = Arc::new(AtomicUsize::new(capacity));
        let read = Arc::clone(&room);
        (
            Queue::new(config, Box::new(move || read.load(Ordering::SeqCst))),
            room,
        )
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// Spawns a waiter that records `name` when admitted and holds its permit
    /// until `hold` is filled.
    fn spawn_waiter(
        queue: &Arc<Queue>,
        priority: i32,
        tenant: u64,
        deadline: Instant,
        name: &'static str,
        order: &Arc<Mutex<Vec<&'static str>>>,
        held: &Arc<Mutex<Vec<Permit>>>,
    ) -> tokio::task::JoinHandle<Result<(), Refused>> {
        let (queue, order, held) = (Arc::clone(queue), Arc::clone(order), Arc::clone(held));
        tokio::spawn(async move {
            let permit = queue.admit(priority, tenant, deadline).await?;
            order.lock().unwrap().push(name);
            held.lock().unwrap().push(permit);
            Ok(())
        })
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_higher_band_goes_first_and_tenants_take_turns() {
        let (queue, _) = queue(1, FlowControl::new());
        let busy = queue.admit(0, 1, far()).await.unwrap();
        let order = Arc::default();
        let held = Arc::default();
        let mut tasks = Vec::new();
        for name in ["heavy1", "heavy2", "heavy3"] {
            tasks.push(spawn_waiter(&queue, 0, 1, far(), name, &order, &held));
            settle().await;
        }
        tasks.push(spawn_waiter(&queue, 0, 2, far(), "light1", &order, &held));
        settle().await;
        tasks.push(spawn_waiter(&queue, 5, 3, far(), "urgent", &order, &held));
        settle().await;
        assert_eq!(
            queue.stats().bands.iter().map(|b| b.waiting).sum::<usize>(),
            5
        );

        drop(busy);
        for _ in 0..5 {
            settle().await;
            let next = held.lock().unwrap().pop();
            drop(next);
        }
        settle().await;
        assert_eq!(
            *order.lock().unwrap(),
            ["urgent", "light1", "heavy1", "heavy2", "heavy3"]
        );
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let stats = queue.stats();
        assert_eq!(stats.in_service, 0);
        assert_eq!(stats.bands[0].priority, 5);
        assert_eq!(stats.bands[1].queued, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_leaves_at_its_deadline() {
        let (queue, _) = queue(1, FlowControl::new());
        let _busy = queue.admit(0, 1, far()).await.unwrap();
        let start = Instant::now();
        let refused = queue
            .admit(0, 2, start + Duration::from_millis(800))
            .await
            .unwrap_err();
        assert_eq!(refused, Refused::Deadline);
        assert_eq!(start.elapsed(), Duration::from_millis(800));
        let stats = queue.stats();
        assert_eq!((stats.bands[0].waiting, stats.bands[0].expired), (0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_bound_the_lowest_band_is_shed() {
        let (queue, _) = queue(1, FlowControl::new().max_waiting(2));
        let _busy = queue.admit(0, 1, far()).await.unwrap();
        let order = Arc::default();
        let held = Arc::default();
        let low = spawn_waiter(&queue, -1, 1, far(), "low", &order, &held);
        let mid = spawn_waiter(&queue, 0, 1, far(), "mid", &order, &held);
        settle().await;
        // Full: a request of the lowest band is refused at once ...
        assert_eq!(queue.admit(-1, 2, far()).await.unwrap_err(), Refused::Shed);
        // ... and a higher one takes the place of the lowest band's newest.
        let high = spawn_waiter(&queue, 3, 1, far(), "high", &order, &held);
        settle().await;
        assert_eq!(low.await.unwrap(), Err(Refused::Shed));
        let stats = queue.stats();
        assert_eq!(stats.bands.iter().map(|b| b.waiting).sum::<usize>(), 2);
        assert_eq!(stats.bands.last().unwrap().shed, 2);
        drop((mid, high));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_goes_away_leaves_the_queue() {
        let (queue, room) = queue(1, FlowControl::new());
        let busy = queue.admit(0, 1, far()).await.unwrap();
        let order = Arc::default();
        let held = Arc::default();
        let gone = spawn_waiter(&queue, 0, 1, far(), "gone", &order, &held);
        let stays = spawn_waiter(&queue, 0, 2, far(), "stays", &order, &held);
        settle().await;
        gone.abort();
        settle().await;
        assert_eq!(queue.stats().bands[0].waiting, 1);
        assert_eq!(queue.stats().bands[0].left, 1);
        drop(busy);
        settle().await;
        assert_eq!(*order.lock().unwrap(), ["stays"]);
        stays.await.unwrap().unwrap();
        // More room (a server joined): a poke lets waiters go.
        let _first = held.lock().unwrap().pop();
        let next = spawn_waiter(&queue, 0, 3, far(), "next", &order, &held);
        settle().await;
        room.store(2, Ordering::SeqCst);
        queue.poke();
        settle().await;
        next.await.unwrap().unwrap();
        assert_eq!(queue.stats().in_service, 2);
    }
}
