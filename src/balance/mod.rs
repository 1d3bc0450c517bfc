//! stub
/// stub
#[derive(Debug)] pub struct Balance;
/// stub
#[derive(Debug)] pub struct BalanceLayer;
