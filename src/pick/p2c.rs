//! stub
/// stub
#[derive(Debug)] pub struct P2c;
