//! The time-to-first-token objective: each eligible server's predicted
//! time to first token for this request, the least, and near-ties settled
//! by where the prompt lives.

use std::time::Duration;

use tokio::time::Instant;
use tower::load::Load;

use super::pass::Raw;
use super::*;
use crate::endpoint::{ClientLoad, Endpoint, TtftModel};
use crate::util::mix64;

impl<Req, S> Scored<Req, S>
where
    Req: ScoredRequest + 'static,
    S: Endpoint + Load + 'static,
    S::Metric: ClientLoad,
{
    /// The eligible server with the least predicted time to first token
    /// (`eligible` is not empty).
    pub(super) fn choose_least_ttft(
        &self,
        endpoints: &Candidates<'_, S>,
        request: &Req,
        eligible: &mut [Raw],
        now: Instant,
        relative: f64,
        absolute: Duration,
    ) -> usize {
        let (hashes, bytes) = match request.prompt() {
            Some(prompt) => (prompt.hashes(), prompt.prompt_bytes()),
            None => (&[][..], 0),
        };
        // Servers without a prefill state: with a latency estimate (the
        // load is `Latency`), that estimate for each request ahead and this
        // one, as Peak-EWMA costs it; without, the prior, every prompt
        // token uncached, and 20 ms for each request ahead. Requests ahead
        // are the queue the first pass read or this client's requests in
        // flight there, whichever is more (a report a poll old would
        // otherwise send everything to one server until the next).
        let prior = TtftModel::default().to_ns();
        const PER_QUEUED_NS: f64 = 20e6;
        let mut least = f64::INFINITY;
        // The best current model among the servers, for this prompt: what a
        // server that has taught nothing (new, or long unheard) is taken to
        // be, so that it is tried rather than left out for being unknown.
        let mut reference: Option<([f64; 2], f64)> = None;
        let mut unknown = 0usize;
        for raw in eligible.iter_mut() {
            let service = &endpoints.services()[raw.index as usize];
            raw.cost = match service.prefill() {
                Some(state) => {
                    let block = state.config().block_bytes as u64;
                    let bytes = bytes.max(hashes.len() as u64 * block);
                    match state.current_model(now) {
                        Some(model) => {
                            let alone = model[0] + model[1] * state.tokens(bytes);
                            if reference.is_none_or(|(_, best)| alone < best) {
                                reference = Some((model, alone));
                            }
                        }
                        None => unknown += 1,
                    }
                    state.predict_ns(
                        state.uncached_tokens(hashes, bytes),
                        state.slot_wait(now),
                        now,
                    )
                }
                None => {
                    let ahead = f64::from(raw.queue.max(raw.in_flight));
                    match service.load().latency() {
                        Some(latency) => latency.as_nanos() as f64 * (ahead + 1.0),
                        None => {
                            let tokens = bytes.max(hashes.len() as u64 * 64) as f64 / 4.0;
                            prior[0] + prior[1] * tokens + PER_QUEUED_NS * ahead
                        }
                    }
                }
            };
            least = least.min(raw.cost);
        }
        if let (Some((model, _)), true) = (reference, unknown > 0) {
            for raw in eligible.iter_mut() {
                let service = &endpoints.services()[raw.index as usize];
                let Some(state) = service.prefill() else {
                    continue;
                };
                if state.current_model(now).is_some() {
                    continue;
                }
                let block = state.config().block_bytes as u64;
                let bytes = bytes.max(hashes.len() as u64 * block);
                raw.cost = state.predict_ns_toward(
                    state.uncached_tokens(hashes, bytes),
                    state.slot_wait(now),
                    now,
                    model,
                );
            }
            least = eligible
                .iter()
                .map(|r| r.cost)
                .fold(f64::INFINITY, f64::min);
        }
        let bound = least * (1.0 + relative) + absolute.as_nanos() as f64;
        let metas = endpoints.metas();
        match hashes.first() {
            // Near-ties go to the prompt's home: the highest rendezvous
            // hash of its first block and the server's key, which every
            // client computes alike, so replicas that know nothing of a
            // prompt still send it to one server.
            Some(&first) => {
                let mut best = (0u64, usize::MAX);
                for raw in eligible.iter().filter(|r| r.cost <= bound) {
                    let i = raw.index as usize;
                    let rank = mix64(first ^ metas[i].key_hash());
                    if best.1 == usize::MAX || rank > best.0 {
                        best = (rank, i);
                    }
                }
                best.1
            }
            // No prompt: at random among the near-ties, so that clients
            // that see the same loads do not all pick the same server.
            None => {
                let mut rng = self.rng.local();
                let mut chosen = usize::MAX;
                let mut ties = 0usize;
                for raw in eligible.iter().filter(|r| r.cost <= bound) {
                    ties += 1;
                    if rng.below(ties) == 0 {
                        chosen = raw.index as usize;
                    }
                }
                chosen
            }
        }
    }
}
