//! A picker behind a pointer, so that a stack's type does not name it.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use super::{Candidates, EndpointInfo, Pick, Prepare};
use crate::error::Saturated;

/// A picker's table with its type erased.
type AnyTable = Box<dyn Any + Send + Sync>;

/// What [`BoxPick`] calls: a [`Pick`] whose table is erased.
trait ErasedPick<Req, S>: Send + Sync + 'static {
    fn prepare_any(&self, endpoints: &[EndpointInfo]) -> AnyTable;
    fn pick_any(
        &self,
        table: &AnyTable,
        endpoints: &Candidates<'_, S>,
        req: &Req,
    ) -> Result<Option<usize>, Saturated>;
}

impl<P, Req, S> ErasedPick<Req, S> for P
where
    P: Pick<Req, S>,
{
    fn prepare_any(&self, endpoints: &[EndpointInfo]) -> AnyTable {
        Box::new(Prepare::prepare(self, endpoints))
    }

    fn pick_any(
        &self,
        table: &AnyTable,
        endpoints: &Candidates<'_, S>,
        req: &Req,
    ) -> Result<Option<usize>, Saturated> {
        // The table was built by this picker's `prepare`: the cast holds.
        let Some(table) = table.downcast_ref::<P::Table>() else {
            return Ok(None);
        };
        Pick::pick_or_shed(self, table, endpoints, req)
    }
}

/// Any picker, boxed: the type the presets use, so that choosing another
/// picker does not change the balancer's type.
///
/// **Cost:** the inner picker's, plus one virtual call and one type check
/// of the table per pick (about a nanosecond; `benches/pick.rs` measures
/// it beside the unboxed pickers). **Weights, no endpoints, missing key:**
/// as the inner picker.
///
/// ```
/// use tower_lb::endpoint::Weighted;
/// use tower_lb::load::InFlight;
/// use tower_lb::pick::{BoxPick, LeastConnections, P2c};
///
/// type Picker = BoxPick<http::Request<()>, Weighted<InFlight<()>>>;
/// let mut picker: Picker = BoxPick::new(P2c::new());
/// assert!(format!("{picker:?}").contains("P2c"));
/// picker = BoxPick::new(LeastConnections::new());
/// # let _ = picker;
/// ```
pub struct BoxPick<Req, S> {
    inner: Arc<dyn ErasedPick<Req, S>>,
    name: &'static str,
}

impl<Req, S> BoxPick<Req, S> {
    /// Boxes `picker`.
    pub fn new<P>(picker: P) -> Self
    where
        P: Pick<Req, S>,
        Req: 'static,
        S: 'static,
    {
        Self {
            inner: Arc::new(picker),
            name: std::any::type_name::<P>(),
        }
    }
}

impl<Req, S> Clone for BoxPick<Req, S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            name: self.name,
        }
    }
}

impl<Req, S> fmt::Debug for BoxPick<Req, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BoxPick").field(&self.name).finish()
    }
}

impl<Req: 'static, S: 'static> Prepare for BoxPick<Req, S> {
    type Table = AnyTable;

    fn prepare(&self, endpoints: &[EndpointInfo]) -> AnyTable {
        self.inner.prepare_any(endpoints)
    }
}

impl<Req: 'static, S: 'static> Pick<Req, S> for BoxPick<Req, S> {
    fn pick(&self, table: &AnyTable, endpoints: &Candidates<'_, S>, req: &Req) -> Option<usize> {
        self.inner.pick_any(table, endpoints, req).ok().flatten()
    }

    fn pick_or_shed(
        &self,
        table: &AnyTable,
        endpoints: &Candidates<'_, S>,
        req: &Req,
    ) -> Result<Option<usize>, Saturated> {
        self.inner.pick_any(table, endpoints, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pick::{RoundRobin, WeightedRoundRobin};

    #[test]
    fn boxed_pickers_pick_as_the_unboxed_ones() {
        let metas: Vec<EndpointInfo> = (0..4).map(|i| EndpointInfo::new(i, 1 + i as u32)).collect();
        let services = [(); 4];
        let endpoints = Candidates::new(&metas, &services);
        let plain = WeightedRoundRobin::new();
        let boxed: BoxPick<(), ()> = BoxPick::new(WeightedRoundRobin::new());
        let (plain_table, boxed_table) = (plain.prepare(&metas), boxed.prepare(&metas));
        for _ in 0..40 {
            assert_eq!(
                plain.pick(&plain_table, &endpoints, &()),
                boxed.pick(&boxed_table, &endpoints, &())
            );
        }
    }

    #[test]
    fn a_foreign_table_is_no_pick_not_a_panic() {
        let metas = [EndpointInfo::new(1, 1)];
        let endpoints = Candidates::new(&metas, &[()]);
        let boxed: BoxPick<(), ()> = BoxPick::new(RoundRobin::new());
        let wrong: AnyTable = Box::new(17u8);
        assert_eq!(boxed.pick(&wrong, &endpoints, &()), None);
    }
}
