//! Maglev hashing over ten real HTTP backends: table shares, key movement
//! when the set changes, and the table size setting.

mod support;

use bytes::Bytes;
use http::{HeaderName, Request};
use http_body_util::Full;
use tower_lb::discover::{self, ChannelDiscover, EndpointSender};
use tower_lb::pick::{
    key::{hash_value, Header},
    EndpointInfo, InvalidTableSize, Maglev, Prepare,
};
use tower_lb::Balance;

use support::*;

const IDS: [&str; 10] = ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"];

/// Distinct keys mapped in the key-movement test.
const KEYS: usize = 10_000;

/// How many of them also go through the balancer to real backends, in each
/// state of the set.
const SAMPLE: usize = 2_000;

fn x_user() -> Header {
    Header::new(HeaderName::from_static("x-user"))
}

/// `GET /` carrying `x-user: user-{i}`.
fn user(i: usize) -> Request<ReqBody> {
    Request::get("/")
        .header("x-user", format!("user-{i}"))
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}

/// A channel holding every server with its weight, and its discovery half.
fn channel_of(
    servers: &[Backend],
    weights: &[u32],
) -> (
    EndpointSender<&'static str, Endpoint>,
    ChannelDiscover<&'static str, Endpoint>,
) {
    let (endpoints, discover) = discover::channel();
    for ((key, server), &weight) in IDS.into_iter().zip(servers).zip(weights) {
        endpoints
            .insert_weighted(key, server.endpoint(), weight)
            .unwrap();
    }
    (endpoints, discover)
}

/// Each endpoint's slots in a table built for `IDS` with `weights`, and the
/// table's size.
fn slot_counts<E: Send + Sync + 'static>(
    maglev: &Maglev<E>,
    weights: &[u32],
) -> (Vec<usize>, usize) {
    let metas: Vec<EndpointInfo> = IDS
        .iter()
        .zip(weights)
        .map(|(id, &weight)| EndpointInfo::new(hash_value(id), weight))
        .collect();
    let table = maglev.prepare(&metas);
    let mut counts = vec![0; IDS.len()];
    for slot in 0..table.len() {
        counts[table.owner(slot).expect("every slot is owned")] += 1;
    }
    assert_eq!(table.owner(table.len()), None);
    (counts, table.len())
}

/// Asserts each endpoint's share of the table is within 1 % (relative) of
/// its weight's share.
fn assert_shares(counts: &[usize], size: usize, weights: &[u32]) {
    let total: u32 = weights.iter().sum();
    for (i, (&count, &weight)) in counts.iter().zip(weights).enumerate() {
        let want = f64::from(weight) / f64::from(total);
        let got = count as f64 / size as f64;
        assert!(
            (got - want).abs() <= 0.01 * want,
            "endpoint {i} (weight {weight}): {count} of {size} slots, {got} against {want}"
        );
    }
}

#[test]
fn each_endpoint_holds_its_weights_share_of_the_table() {
    let one_to_ten: Vec<u32> = (1..=10).collect();
    for weights in [&[1; 10][..], &one_to_ten, &[9, 1, 1, 1, 1, 1, 1, 1, 1, 1]] {
        let (counts, size) = slot_counts(&Maglev::new(x_user()), weights);
        assert_eq!(size, 65_537);
        assert_eq!(counts.iter().sum::<usize>(), size);
        assert_shares(&counts, size, weights);
    }

    // A table configured below 100 slots an endpoint grows to that, which
    // keeps equal shares within 1 %.
    let small = Maglev::new(x_user()).with_table_size(97).unwrap();
    let (counts, size) = slot_counts(&small, &[1; 10]);
    assert_eq!(size, 1009);
    assert_shares(&counts, size, &[1; 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_one_of_ten_moves_at_most_a_fifth_of_the_keys() {
    let servers = backends(&IDS).await;
    let (endpoints, discover) = channel_of(&servers, &[1; 10]);
    let balance = Balance::new(discover, Maglev::new(x_user()));
    within("discovery", balance.wait_for(|keys| keys.len() == 10)).await;
    // All keys through the picker over the balancer's current set; a
    // sample through the balancer and real backends, which must agree.
    let mapping = || picked(&Maglev::new(x_user()), &balance.endpoints(), KEYS, user);

    let before = mapping();
    assert_eq!(answers(&balance, SAMPLE, user).await, before[..SAMPLE]);

    endpoints.remove("m7").unwrap();
    within("m7 removed", balance.wait_for(|keys| !keys.contains(&"m7"))).await;
    let during = mapping();
    let on_m7 = servers[7].requests();
    assert_eq!(answers(&balance, SAMPLE, user).await, during[..SAMPLE]);
    assert_eq!(
        servers[7].requests(),
        on_m7,
        "a removed endpoint gets nothing"
    );
    let mut moved = 0;
    for (old, new) in before.iter().zip(&during) {
        assert_ne!(new, "m7");
        if old != new {
            moved += 1;
        }
    }
    let owned = before.iter().filter(|owner| *owner == "m7").count();
    // Every key of "m7" moves, and a few others with them (the price of
    // Maglev's exact shares), within a fifth of all keys.
    assert!(
        moved >= owned && moved <= KEYS / 5,
        "{moved} moved, {owned} on m7"
    );

    endpoints.insert("m7", servers[7].endpoint()).unwrap();
    within("m7 back", balance.wait_for(|keys| keys.len() == 10)).await;
    let after = mapping();
    assert_eq!(after, before, "the same set builds the same table");
    assert_eq!(answers(&balance, SAMPLE, user).await, before[..SAMPLE]);
}

#[tokio::test]
async fn one_key_one_backend_and_weights_through_real_servers() {
    let servers = backends(&IDS).await;
    let weights = [3, 1, 1, 1, 1, 1, 1, 1, 1, 1];
    let (_endpoints, discover) = channel_of(&servers, &weights);
    let mut balance = Balance::new(discover, Maglev::new(x_user()));
    within("discovery", balance.wait_for(|keys| keys.len() == 10)).await;
    assert_eq!(balance.endpoints().iter().map(|(_, w)| w).sum::<u32>(), 12);

    let answers = within("one key", tally(&mut balance, 50, |_| user(42))).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    let counts = served(&servers);
    assert_eq!(counts.iter().filter(|&&n| n == 50).count(), 1, "{counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 50);

    // Weighted shares reach the backends: 1200 distinct keys, "m0" with
    // three times the weight of each other.
    let mapped = support::answers(&balance, 1200, user).await;
    assert_eq!(
        mapped,
        picked(&Maglev::new(x_user()), &balance.endpoints(), 1200, user)
    );
    let heavy = mapped.iter().filter(|owner| *owner == "m0").count();
    assert!((200..400).contains(&heavy), "m0 answered {heavy} of 1200");

    // A request without the key goes round robin, weights aside.
    let before = served(&servers);
    let answers = within("keyless", tally(&mut balance, 100, |_| get("/"))).await;
    assert!(answers.values().all(|&n| n == 10), "{answers:?}");
    let after = served(&servers);
    assert!(after.iter().zip(&before).all(|(a, b)| a - b == 10));
}

#[test]
fn invalid_table_sizes_are_typed_errors() {
    for size in [0, 1, 2, 7, 96, 100, 65_536, 16_777_215, usize::MAX] {
        let error: InvalidTableSize = Maglev::new(x_user())
            .with_table_size(size)
            .expect_err("not a prime from 97 to 16 777 213");
        assert_eq!(error.size(), size);
        let message = error.to_string();
        assert!(message.contains("prime"), "{message}");
        let _: &dyn std::error::Error = &error;
    }
    for size in [97, 65_537, 16_777_213] {
        let maglev = Maglev::new(x_user()).with_table_size(size).unwrap();
        assert_eq!(maglev.table_size(), size);
    }
}
