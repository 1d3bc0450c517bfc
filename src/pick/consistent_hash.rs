//! stub
/// stub
#[derive(Debug)]
pub struct ConsistentHash<E>(E);
impl<E> ConsistentHash<E> {
    /// stub
    pub fn new(e: E) -> Self {
        Self(e)
    }
}
/// stub
#[derive(Debug)]
pub struct BoundedConsistentHash<E>(E);
