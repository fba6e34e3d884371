//! The parallel scheduler: runs a graph of ops as their inputs complete, at most `jobs` at a
//! time, each on a blocking thread (the work is file-system and process work, and an
//! executor's `run` must stay on the thread that called it). The driver is a single-threaded
//! tokio loop on the caller's thread that owns all bookkeeping, so no state is shared but the
//! cancel flag and the event channel.
//!
//! Before an op runs, the [`Job`] gives its identity (its cache key, or a digest of its
//! definition when the key depends on what the op reads): a second op with the identity of one
//! already queued, running or done waits for it and reuses its result instead of computing it
//! again. A failure stops the build: the cancel flag kills running processes, nothing more is
//! started, and the driver waits for every running op to unwind (so no process, mount or
//! temporary directory outlives the solve) before it returns every failure it saw.

use crate::cachekey::CacheKey;
use crate::op::OpId;
use crate::solve::Event;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

/// How often the driver looks at the caller's cancel flag (set from a signal handler).
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// Why an op did not produce a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The op failed on its own.
    Failed(String),
    /// The op was stopped because the build was cancelled or another op failed.
    Cancelled,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Failed(message)
    }
}

/// What a running op may touch: the build's cancel flag and the progress channel.
#[derive(Clone)]
pub(crate) struct StepContext {
    cancel: Arc<AtomicBool>,
    events: mpsc::UnboundedSender<Event>,
}

impl StepContext {
    /// The flag executors watch: set when the build stops.
    pub(crate) fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }

    #[cfg(test)]
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Reports progress; the driver hands it to the caller's callback.
    pub(crate) fn emit(&self, event: Event) {
        // The receiver lives until every op has returned.
        let _ = self.events.send(event);
    }
}

/// The results of an op's inputs, by op.
pub(crate) type Inputs<T> = HashMap<OpId, T>;

/// The work behind the ops of a graph.
pub(crate) trait Job: Send + Sync + 'static {
    /// An op's result, as its dependents read it.
    type Output: Clone + Send + 'static;

    /// What names the op's result before it runs: ops with equal identities are computed once.
    fn identity(&self, op: OpId, done: &HashMap<OpId, Self::Output>) -> CacheKey;

    /// Computes the op. Runs on a blocking thread.
    fn run(
        &self,
        op: OpId,
        inputs: Inputs<Self::Output>,
        ctx: &StepContext,
    ) -> Result<Self::Output, Failure>;

    /// The result of `op` when an op of the same identity computed `done`.
    fn reuse(&self, op: OpId, done: &Self::Output, ctx: &StepContext) -> Self::Output;
}

/// The ops to solve, each with its inputs (all of which must be in the plan too).
pub(crate) struct Plan {
    pub inputs: BTreeMap<OpId, Vec<OpId>>,
}

/// Every failure of a stopped solve, in op order. Ops stopped by the cancellation are there as
/// [`Failure::Cancelled`]; ops that were never started are not.
pub(crate) type Failures = Vec<(OpId, Failure)>;

/// Solves `plan`, running at most `jobs` ops at once. `cancel` is the caller's flag (a signal
/// handler may set it); `events` receives progress on the caller's thread.
pub(crate) fn solve<J: Job>(
    job: Arc<J>,
    plan: &Plan,
    jobs: usize,
    cancel: &AtomicBool,
    events: &(dyn Fn(Event) + Send + Sync),
) -> Result<HashMap<OpId, J::Output>, Failures> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| {
            let first = plan.inputs.keys().next().copied().unwrap_or_default();
            vec![(
                first,
                Failure::Failed(format!("starting the scheduler: {e}")),
            )]
        })?;
    let mut driver = Driver::new(job, plan, jobs.max(1));
    runtime.block_on(driver.run(cancel, events))
}

/// The scheduler's state, owned by the driver loop.
struct Driver<J: Job> {
    job: Arc<J>,
    inputs: BTreeMap<OpId, Vec<OpId>>,
    dependents: HashMap<OpId, Vec<OpId>>,
    /// Inputs not yet done, per op still waiting.
    pending: HashMap<OpId, usize>,
    /// Ops whose inputs are done, waiting for a permit; in op order, so `--jobs 1` is
    /// deterministic.
    ready: BTreeSet<OpId>,
    /// The op that computes each identity.
    leaders: HashMap<CacheKey, OpId>,
    /// Ops waiting for the leader of their identity.
    followers: HashMap<OpId, Vec<OpId>>,
    done: HashMap<OpId, J::Output>,
    failures: Failures,
    permits: Arc<Semaphore>,
    running: JoinSet<(OpId, Result<J::Output, Failure>)>,
    ctx: StepContext,
    receiver: mpsc::UnboundedReceiver<Event>,
    stopping: bool,
}

impl<J: Job> Driver<J> {
    fn new(job: Arc<J>, plan: &Plan, jobs: usize) -> Driver<J> {
        let mut dependents: HashMap<OpId, Vec<OpId>> = HashMap::new();
        let mut pending = HashMap::new();
        for (&op, inputs) in &plan.inputs {
            let distinct: BTreeSet<OpId> = inputs.iter().copied().collect();
            for &input in &distinct {
                dependents.entry(input).or_default().push(op);
            }
            pending.insert(op, distinct.len());
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        Driver {
            job,
            inputs: plan.inputs.clone(),
            dependents,
            pending,
            ready: BTreeSet::new(),
            leaders: HashMap::new(),
            followers: HashMap::new(),
            done: HashMap::new(),
            failures: Vec::new(),
            permits: Arc::new(Semaphore::new(jobs)),
            running: JoinSet::new(),
            ctx: StepContext {
                cancel: Arc::new(AtomicBool::new(false)),
                events: sender,
            },
            receiver,
            stopping: false,
        }
    }

    async fn run(
        &mut self,
        cancel: &AtomicBool,
        events: &(dyn Fn(Event) + Send + Sync),
    ) -> Result<HashMap<OpId, J::Output>, Failures> {
        let sources: Vec<OpId> = self
            .pending
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(op, _)| *op)
            .collect();
        self.became_ready(sources);
        let mut tick = tokio::time::interval(CANCEL_POLL);
        loop {
            if cancel.load(Ordering::SeqCst) {
                self.stop();
            }
            self.dispatch();
            if self.running.is_empty() {
                break;
            }
            tokio::select! {
                Some(joined) = self.running.join_next() => {
                    self.forward_events(events);
                    match joined {
                        Ok((op, result)) => self.finished(op, result),
                        // Unreachable: `run` catches panics, and nothing aborts the tasks.
                        Err(e) => std::panic::resume_unwind(e.into_panic()),
                    }
                }
                Some(event) = self.receiver.recv() => events(event),
                _ = tick.tick() => {}
            }
        }
        self.forward_events(events);
        if self.failures.is_empty() && self.done.len() == self.inputs.len() {
            return Ok(std::mem::take(&mut self.done));
        }
        let mut failures = std::mem::take(&mut self.failures);
        failures.sort_by_key(|(op, _)| *op);
        Err(failures)
    }

    fn forward_events(&mut self, events: &(dyn Fn(Event) + Send + Sync)) {
        while let Ok(event) = self.receiver.try_recv() {
            events(event);
        }
    }

    /// Stops the build: running ops are cancelled, no other starts.
    fn stop(&mut self) {
        self.stopping = true;
        self.ctx.cancel.store(true, Ordering::SeqCst);
    }

    /// Starts ready ops while permits last.
    fn dispatch(&mut self) {
        while !self.stopping {
            let Some(&op) = self.ready.first() else {
                return;
            };
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                return;
            };
            self.ready.remove(&op);
            let inputs = self.inputs_of(op);
            let job = self.job.clone();
            let ctx = self.ctx.clone();
            self.running.spawn_blocking(move || {
                let _permit = permit;
                let result =
                    std::panic::catch_unwind(AssertUnwindSafe(|| job.run(op, inputs, &ctx)))
                        .unwrap_or_else(|panic| Err(Failure::Failed(panic_message(&*panic))));
                (op, result)
            });
        }
    }

    fn inputs_of(&self, op: OpId) -> Inputs<J::Output> {
        self.inputs[&op]
            .iter()
            .map(|input| (*input, self.done[input].clone()))
            .collect()
    }

    /// Records what a running op returned.
    fn finished(&mut self, op: OpId, result: Result<J::Output, Failure>) {
        match result {
            Ok(output) => self.complete(op, output),
            Err(failure) => {
                self.failures.push((op, failure));
                self.stop();
            }
        }
    }

    /// Records `op`'s result, hands it to the ops waiting for the same identity, and queues
    /// the dependents this completes.
    fn complete(&mut self, op: OpId, output: J::Output) {
        let mut completed = vec![(op, output)];
        while let Some((op, output)) = completed.pop() {
            for follower in self.followers.remove(&op).unwrap_or_default() {
                let reused = self.job.reuse(follower, &output, &self.ctx);
                completed.push((follower, reused));
            }
            self.done.insert(op, output);
            let mut now_ready = Vec::new();
            for dependent in self.dependents.get(&op).cloned().unwrap_or_default() {
                let n = self
                    .pending
                    .get_mut(&dependent)
                    .expect("dependents are planned");
                *n -= 1;
                if *n == 0 {
                    now_ready.push(dependent);
                }
            }
            self.became_ready(now_ready);
        }
    }

    /// Queues ops whose inputs are all done, or attaches them to the op computing the same
    /// identity.
    fn became_ready(&mut self, ops: Vec<OpId>) {
        for op in ops {
            if self.stopping {
                return;
            }
            let identity = self.job.identity(op, &self.done);
            match self.leaders.get(&identity) {
                Some(&leader) => match self.done.get(&leader) {
                    Some(output) => {
                        let reused = self.job.reuse(op, output, &self.ctx);
                        self.complete(op, reused);
                    }
                    None => self.followers.entry(leader).or_default().push(op),
                },
                None => {
                    self.leaders.insert(identity, op);
                    self.ready.insert(op);
                }
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    format!("kiln bug: a step panicked: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cachekey::KeyBuilder;
    use std::sync::Mutex;
    use std::time::Instant;

    /// Ops that sleep, fail or wait for cancellation, recording what ran.
    #[derive(Default)]
    struct Fake {
        /// Identity per op (defaults to the op id).
        same: HashMap<OpId, &'static str>,
        sleep: HashMap<OpId, Duration>,
        fail: BTreeSet<OpId>,
        /// Ops that run until cancelled.
        hang: BTreeSet<OpId>,
        ran: Mutex<Vec<OpId>>,
        reused: Mutex<Vec<OpId>>,
    }

    impl Job for Fake {
        type Output = Vec<OpId>;

        fn identity(&self, op: OpId, _: &HashMap<OpId, Vec<OpId>>) -> CacheKey {
            match self.same.get(&op) {
                Some(name) => KeyBuilder::new("same").str(name).finish(),
                None => KeyBuilder::new("op").str(&op.to_string()).finish(),
            }
        }

        fn run(
            &self,
            op: OpId,
            inputs: Inputs<Vec<OpId>>,
            ctx: &StepContext,
        ) -> Result<Vec<OpId>, Failure> {
            self.ran.lock().unwrap().push(op);
            if let Some(d) = self.sleep.get(&op) {
                std::thread::sleep(*d);
            }
            if self.fail.contains(&op) {
                return Err(Failure::Failed(format!("op {op} failed")));
            }
            if self.hang.contains(&op) {
                while !ctx.cancelled() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Err(Failure::Cancelled);
            }
            let mut seen: Vec<OpId> = inputs.into_values().flatten().collect();
            seen.push(op);
            seen.sort();
            seen.dedup();
            Ok(seen)
        }

        fn reuse(&self, op: OpId, done: &Vec<OpId>, _: &StepContext) -> Vec<OpId> {
            self.reused.lock().unwrap().push(op);
            done.clone()
        }
    }

    /// 0 → {1, 2, 3} → 4
    fn diamond() -> Plan {
        Plan {
            inputs: BTreeMap::from([
                (0, vec![]),
                (1, vec![0]),
                (2, vec![0]),
                (3, vec![0]),
                (4, vec![1, 2, 3]),
            ]),
        }
    }

    type Solved = Result<HashMap<OpId, Vec<OpId>>, Failures>;

    fn run(fake: Fake, plan: &Plan, jobs: usize) -> (Arc<Fake>, Solved) {
        let fake = Arc::new(fake);
        let cancel = AtomicBool::new(false);
        let result = solve(fake.clone(), plan, jobs, &cancel, &|_| {});
        (fake, result)
    }

    #[test]
    fn independent_ops_run_at_once_up_to_jobs() {
        let sleepy = || Fake {
            sleep: (1..=3).map(|op| (op, Duration::from_millis(200))).collect(),
            ..Default::default()
        };
        let start = Instant::now();
        let (_, result) = run(sleepy(), &diamond(), 3);
        assert!(start.elapsed() < Duration::from_millis(500));
        assert_eq!(result.unwrap()[&4], vec![0, 1, 2, 3, 4]);

        let start = Instant::now();
        let (fake, result) = run(sleepy(), &diamond(), 1);
        assert!(start.elapsed() >= Duration::from_millis(600));
        result.unwrap();
        assert_eq!(*fake.ran.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn equal_identities_compute_once() {
        let fake = Fake {
            same: HashMap::from([(1, "x"), (2, "x")]),
            sleep: HashMap::from([(1, Duration::from_millis(50))]),
            ..Default::default()
        };
        let (fake, result) = run(fake, &diamond(), 4);
        let done = result.unwrap();
        assert_eq!(done[&2], done[&1]);
        let ran = fake.ran.lock().unwrap();
        assert_eq!(ran.iter().filter(|op| **op == 1 || **op == 2).count(), 1);
        assert_eq!(fake.reused.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_failure_cancels_running_ops_and_starts_nothing_more() {
        let fake = Fake {
            fail: BTreeSet::from([1]),
            hang: BTreeSet::from([2]),
            sleep: HashMap::from([(1, Duration::from_millis(50))]),
            ..Default::default()
        };
        let plan = Plan {
            inputs: BTreeMap::from([(0, vec![]), (1, vec![0]), (2, vec![0]), (3, vec![1, 2])]),
        };
        let (fake, result) = run(fake, &plan, 2);
        assert_eq!(
            result.unwrap_err(),
            vec![
                (1, Failure::Failed("op 1 failed".into())),
                (2, Failure::Cancelled)
            ]
        );
        assert!(!fake.ran.lock().unwrap().contains(&3));
    }

    #[test]
    fn every_failure_is_reported() {
        let fake = Fake {
            fail: BTreeSet::from([1, 3]),
            ..Default::default()
        };
        let (_, result) = run(fake, &diamond(), 4);
        let failed: Vec<OpId> = result
            .unwrap_err()
            .into_iter()
            .filter(|(_, f)| matches!(f, Failure::Failed(_)))
            .map(|(op, _)| op)
            .collect();
        assert_eq!(failed, vec![1, 3]);
    }

    #[test]
    fn the_callers_cancel_flag_stops_the_solve() {
        let fake = Arc::new(Fake {
            hang: BTreeSet::from([0]),
            ..Default::default()
        });
        let cancel = Arc::new(AtomicBool::new(false));
        let setter = {
            let cancel = cancel.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                cancel.store(true, Ordering::SeqCst);
            })
        };
        let result = solve(fake.clone(), &diamond(), 2, &cancel, &|_| {});
        setter.join().unwrap();
        assert_eq!(result.unwrap_err(), vec![(0, Failure::Cancelled)]);
        assert_eq!(*fake.ran.lock().unwrap(), vec![0]);
    }

    #[test]
    fn panics_become_failures() {
        struct Panics;
        impl Job for Panics {
            type Output = ();
            fn identity(&self, op: OpId, _: &HashMap<OpId, ()>) -> CacheKey {
                KeyBuilder::new("op").str(&op.to_string()).finish()
            }
            fn run(&self, _: OpId, _: Inputs<()>, _: &StepContext) -> Result<(), Failure> {
                panic!("boom")
            }
            fn reuse(&self, _: OpId, _: &(), _: &StepContext) {}
        }
        let plan = Plan {
            inputs: BTreeMap::from([(0, vec![])]),
        };
        let result = solve(Arc::new(Panics), &plan, 1, &AtomicBool::new(false), &|_| {});
        assert!(
            matches!(&result.unwrap_err()[..], [(0, Failure::Failed(m))] if m.contains("boom"))
        );
    }
}
