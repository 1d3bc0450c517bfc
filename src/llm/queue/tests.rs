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
