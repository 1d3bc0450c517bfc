//! stub
/// stub
#[derive(Debug)]
pub struct Maglev;
/// stub
#[derive(Debug)]
pub struct InvalidTableSize;
