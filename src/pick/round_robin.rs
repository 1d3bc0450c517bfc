//! stub
/// stub
#[derive(Debug)] pub struct RoundRobin;
