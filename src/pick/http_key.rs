//! stub
/// stub
#[derive(Debug)] pub struct ClientAddr; /// stub
#[derive(Debug)] pub struct ClientIp; /// stub
#[derive(Debug)] pub struct Header; /// stub
#[derive(Debug)] pub struct Path;
