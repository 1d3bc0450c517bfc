//! stub
/// stub
#[derive(Debug)] pub struct IpHash;
