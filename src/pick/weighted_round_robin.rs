//! stub
/// stub
#[derive(Debug)] pub struct WeightedRoundRobin;
