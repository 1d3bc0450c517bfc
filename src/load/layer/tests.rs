use super::*;
use crate::endpoint::{Endpoint, Weighted};

#[tokio::test(start_paused = true)]
async fn layers_wrap_and_keep_the_weight() {
    let counted = InFlightLayer::new().layer(Weighted::new((), 4));
    assert_eq!((counted.weight(), counted.in_flight()), (4, 0));

    let layer = LatencyLayer::default();
    assert_eq!(
        (layer.default_rtt(), layer.decay()),
        (DEFAULT_RTT, DEFAULT_DECAY)
    );
    let timed = layer.layer(Weighted::new((), 2));
    assert_eq!(timed.weight(), 2);
    assert_eq!(timed.rtt_estimate(), DEFAULT_RTT);
}

#[test]
fn each_layered_service_gets_its_own_count() {
    let layer: InFlightLayer = InFlightLayer::default();
    let a = layer.layer(());
    let b = layer.layer(());
    assert!(!a.counter().same_as(&b.counter()));
}
