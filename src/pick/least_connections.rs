//! stub
/// stub
#[derive(Debug)] pub struct LeastConnections;
