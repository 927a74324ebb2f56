//! Data-parallel training with PyTorch DDP's semantics over a c10d [`ProcessGroup`]:
//! parameters and buffers broadcast from rank 0 at the start (and after a resume), buffers
//! (batch-norm statistics) broadcast from rank 0 before each step, gradients averaged in
//! flattened buckets of about [`BUCKET_BYTES`] whose all-reduces start during backward
//! ([`GradSync`]) and end before clipping and the optimiser, and statistics (the DINO centre, the logged loss)
//! taken over the global batch. With identical gradients every rank computes the same norm,
//! the same loss-scaler overflow decision and the same update, so the replicas stay
//! bit-identical. A world of one skips every collective, and its numbers are those of a
//! plain single-process run.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use process_group::{Backend, GradHooks, ProcessGroup, Rendezvous, Work};
use stage_kit::DeviceSpec;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Flat-buffer size of gradient buckets: PyTorch's reducer default (`bucket_cap_mb=25`).
pub const BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// The process's c10d group, joined once (like `torch.distributed.init_process_group`) and
/// shared by everything the process trains or embeds after.
static WORLD: Mutex<Option<Arc<ProcessGroup>>> = Mutex::new(None);
/// Bound on joining and on each collective; [`set_timeout`] changes it before joining.
static TIMEOUT: Mutex<Duration> = Mutex::new(process_group::rendezvous::DEFAULT_TIMEOUT);

/// Sets the timeout of joining and of every collective (before the first [`world`]).
pub fn set_timeout(timeout: Duration) {
    *TIMEOUT.lock().unwrap_or_else(PoisonError::into_inner) = timeout;
}

fn rendezvous() -> Result<Rendezvous> {
    let timeout = *TIMEOUT.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(Rendezvous::from_env()
        .map_err(|e| Error::Distributed(e.to_string()))?
        .with_timeout(timeout))
}

/// The device of this rank for a configuration's `device`: `auto` and `cuda` mean
/// `cuda:LOCAL_RANK` (one GPU per rank on each machine).
pub fn device(spec: DeviceSpec) -> Result<Device> {
    Ok(feature_extract::device::resolve_for_rank(
        spec,
        rendezvous()?.local_rank,
    )?)
}

/// This process's place in the training world: joins, on first use, the group that the
/// rendezvous variables describe (NCCL for CUDA devices when built with it, else Gloo), or
/// is a world of one without them. A rank's intra-op threads become its share of the cores
/// (cores / local ranks), so that ranks on one machine do not oversubscribe it.
pub fn world(device: Device) -> Result<Arc<ProcessGroup>> {
    let mut world = WORLD.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(group) = world.as_ref() {
        return Ok(group.clone());
    }
    let rendezvous = rendezvous()?;
    let group = if rendezvous.world_size == 1 {
        ProcessGroup::single()
    } else {
        let threads = process_group::launch::threads_per_rank(rendezvous.local_world_size);
        tch::set_num_threads(threads as i32);
        let group = ProcessGroup::connect(&rendezvous, Backend::for_device(device))
            .map_err(|e| Error::Distributed(e.to_string()))?;
        tracing::info!(
            "rank {} of {} (local rank {}) on {device:?}, {threads} intra-op thread(s)",
            group.rank(),
            group.world_size(),
            group.local_rank(),
        );
        group
    };
    Ok(world.insert(Arc::new(group)).clone())
}

fn collective(e: process_group::Error) -> Error {
    Error::Distributed(e.to_string())
}

/// Tensors packed into flat buffers, one kind and device per buffer and at most
/// [`BUCKET_BYTES`] each (a tensor larger than that gets a buffer of its own), so that a
/// collective runs per bucket rather than per tensor. The buffers are allocated once.
struct Buckets {
    buckets: Vec<Bucket>,
}

struct Bucket {
    /// (index into the tensors, offset in the buffer, elements).
    members: Vec<(usize, i64, i64)>,
    flat: Tensor,
}

impl Buckets {
    fn new(like: &[Tensor]) -> Self {
        /// A bucket being filled: its kind and device, members and size.
        struct Open {
            kind: Kind,
            device: Device,
            members: Vec<(usize, i64, i64)>,
            numel: i64,
            bytes: usize,
        }
        let close = |o: Open| Bucket {
            members: o.members,
            flat: Tensor::zeros([o.numel], (o.kind, o.device)),
        };
        let mut buckets = Vec::new();
        let mut open: Vec<Open> = Vec::new();
        for (i, t) in like.iter().enumerate() {
            let (kind, device) = (t.kind(), t.device());
            let bytes = t.numel() * kind.elt_size_in_bytes();
            let s = match open
                .iter()
                .position(|o| o.kind == kind && o.device == device)
            {
                Some(s) if !open[s].members.is_empty() && open[s].bytes + bytes > BUCKET_BYTES => {
                    let full = std::mem::replace(
                        &mut open[s],
                        Open {
                            kind,
                            device,
                            members: Vec::new(),
                            numel: 0,
                            bytes: 0,
                        },
                    );
                    buckets.push(close(full));
                    s
                }
                Some(s) => s,
                None => {
                    open.push(Open {
                        kind,
                        device,
                        members: Vec::new(),
                        numel: 0,
                        bytes: 0,
                    });
                    open.len() - 1
                }
            };
            let o = &mut open[s];
            o.members.push((i, o.numel, t.numel() as i64));
            o.numel += t.numel() as i64;
            o.bytes += bytes;
        }
        buckets.extend(
            open.into_iter()
                .filter(|o| !o.members.is_empty())
                .map(close),
        );
        Buckets { buckets }
    }

    /// Fills each bucket from `tensors` and starts the collective `start` on it, so that
    /// the buckets' collectives run concurrently; then waits for each in order and copies
    /// the results back into the defined tensors.
    fn apply(
        &self,
        tensors: &[Tensor],
        mut start: impl FnMut(&mut Tensor) -> Result<Work>,
    ) -> Result<()> {
        let mut started = Vec::with_capacity(self.buckets.len());
        for bucket in &self.buckets {
            for (m, &(i, _, _)) in bucket.members.iter().enumerate() {
                bucket.fill(m, &tensors[i], 1.0);
            }
            started.push((bucket, start(&mut bucket.flat.shallow_clone())?));
        }
        for (bucket, work) in started {
            work.wait().map_err(collective)?;
            bucket.write_back(|i| tensors[i].shallow_clone());
        }
        Ok(())
    }
}

impl Bucket {
    /// Copies `t` times `scale` (zeros when `t` is undefined) into the slot of member `m`;
    /// the scaling is fused into the copy, as DDP's reducer divides by the world size.
    fn fill(&self, m: usize, t: &Tensor, scale: f64) {
        let (_, offset, n) = self.members[m];
        let mut slot = self.flat.narrow(0, offset, n);
        tch::no_grad(|| {
            if !t.defined() {
                let _ = slot.zero_();
            } else if scale == 1.0 {
                slot.copy_(&t.reshape([n]));
            } else {
                // A 0-dim factor: the Scalar overload of `mul_out` computes into a temporary
                // and copies, a second pass and an allocation per gradient.
                let _ = t.reshape([n]).mul_out(&slot, &Tensor::from(scale));
            }
        });
    }

    /// Copies each slot into its member's tensor (`tensor(i)`), when that is defined.
    fn write_back(&self, tensor: impl Fn(usize) -> Tensor) {
        tch::no_grad(|| {
            for &(i, offset, n) in &self.members {
                let mut t = tensor(i);
                if t.defined() {
                    t.copy_(&self.flat.narrow(0, offset, n).view_as(&t));
                }
            }
        });
    }
}

/// Averages gradients over the ranks as PyTorch DDP's reducer does: a hook on each
/// parameter's gradient accumulator copies the gradient, divided by the world size, into its
/// bucket as soon as backward has it, and a bucket's all-reduce starts when its last
/// gradient is in (buckets start in order, the same on every rank), so communication
/// overlaps the rest of the backward. After backward the remaining buckets start and every
/// bucket is waited for and copied back. The bucket layout follows the order in which rank
/// 0's gradients became ready in the process's first synced backward (DDP's bucket rebuild),
/// so that the first buckets fill first; that backward syncs only after it, so every step of
/// a run, resumed or not, sums the same buckets.
pub struct GradSync {
    /// Declared first: the hooks go before the state they write to.
    hooks: Option<GradHooks>,
    reducer: Arc<Mutex<Reducer>>,
}

impl GradSync {
    /// For `params` (in the same order on every rank).
    pub fn new(group: Arc<ProcessGroup>, params: Vec<Tensor>) -> Result<Self> {
        let reducer = Arc::new(Mutex::new(Reducer::new(group.clone(), params)));
        let hooks = if group.world_size() == 1 {
            None
        } else {
            let watched: Vec<usize> = {
                let r = lock(&reducer);
                (0..r.params.len())
                    .filter(|&i| r.params[i].requires_grad())
                    .collect()
            };
            let params: Vec<Tensor> = {
                let r = lock(&reducer);
                watched
                    .iter()
                    .map(|&i| r.params[i].shallow_clone())
                    .collect()
            };
            let state = Arc::downgrade(&reducer);
            let hooks = GradHooks::new(&params, move |k| {
                if let Some(state) = state.upgrade() {
                    lock(&state).ready(watched[k]);
                }
            })
            .map_err(collective)?;
            Some(hooks)
        };
        Ok(GradSync { hooks, reducer })
    }

    /// Back-propagates `loss` into the parameters' gradients and, with `sync`, replaces every
    /// gradient with its mean over the ranks (a parameter without a gradient on a rank counts
    /// as zero there). Without `sync` the gradients only accumulate (DDP's `no_sync`).
    pub fn backward(&self, loss: &Tensor, sync: bool) -> Result<()> {
        let sync = sync && self.hooks.is_some();
        if sync {
            lock(&self.reducer).arm();
        }
        loss.backward();
        if sync {
            lock(&self.reducer).finish()?;
        }
        Ok(())
    }
}

fn lock(reducer: &Mutex<Reducer>) -> std::sync::MutexGuard<'_, Reducer> {
    reducer.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The state of [`GradSync`] that its hooks update during a synced backward.
struct Reducer {
    group: Arc<ProcessGroup>,
    params: Vec<Tensor>,
    buckets: Buckets,
    /// Per parameter: its bucket and its place among the bucket's members.
    location: Vec<(usize, usize)>,
    /// A synced backward is under way.
    armed: bool,
    /// Per parameter: already copied into its bucket in this backward.
    copied: Vec<bool>,
    /// Per bucket: members not yet copied.
    missing: Vec<usize>,
    /// The started all-reduces, bucket by bucket from the first.
    works: Vec<Work>,
    /// The order gradients became ready in, while the first synced backward records it.
    ready_order: Option<Vec<usize>>,
    /// The first failure of a collective started from a hook.
    error: Option<Error>,
}

impl Reducer {
    /// Without buckets: they are laid out after the first synced backward.
    fn new(group: Arc<ProcessGroup>, params: Vec<Tensor>) -> Self {
        Reducer {
            group,
            buckets: Buckets {
                buckets: Vec::new(),
            },
            location: Vec::new(),
            armed: false,
            copied: vec![false; params.len()],
            missing: Vec::new(),
            works: Vec::new(),
            ready_order: Some(Vec::new()),
            error: None,
            params,
        }
    }

    /// Buckets filled with the parameters in `order`.
    fn lay_out(&mut self, order: &[usize]) {
        let like: Vec<Tensor> = order
            .iter()
            .map(|&i| self.params[i].shallow_clone())
            .collect();
        self.buckets = Buckets::new(&like);
        self.location = vec![(0, 0); self.params.len()];
        for (b, bucket) in self.buckets.buckets.iter_mut().enumerate() {
            for (m, member) in bucket.members.iter_mut().enumerate() {
                member.0 = order[member.0];
                self.location[member.0] = (b, m);
            }
        }
    }

    fn arm(&mut self) {
        self.armed = true;
        self.clear();
    }

    /// No gradient copied in yet.
    fn clear(&mut self) {
        self.copied.fill(false);
        self.missing = self
            .buckets
            .buckets
            .iter()
            .map(|b| b.members.len())
            .collect();
    }

    /// Hook: parameter `i` has its gradient.
    fn ready(&mut self, i: usize) {
        if !self.armed || self.copied[i] {
            return;
        }
        if let Some(order) = &mut self.ready_order {
            order.push(i);
            return; // the buckets are laid out in this order before anything is copied
        }
        self.copy_in(i);
        self.start_full_buckets();
    }

    /// Copies parameter `i`'s gradient (zeros without one) into its bucket.
    fn copy_in(&mut self, i: usize) {
        let (b, m) = self.location[i];
        let scale = 1.0 / self.group.world_size() as f64;
        self.buckets.buckets[b].fill(m, &self.params[i].grad(), scale);
        self.copied[i] = true;
        self.missing[b] -= 1;
    }

    /// Starts the all-reduce of every complete bucket whose predecessors have started.
    fn start_full_buckets(&mut self) {
        while let Some(bucket) = self.buckets.buckets.get(self.works.len()) {
            if self.missing[self.works.len()] > 0 {
                break;
            }
            let mut flat = bucket.flat.shallow_clone();
            match self.group.start_all_reduce(&mut flat) {
                Ok(work) => self.works.push(work),
                Err(e) => {
                    self.error.get_or_insert(collective(e));
                    break;
                }
            }
        }
    }

    /// After backward: copies the gradients no hook reported (earlier micro-batches' or
    /// none), starts the remaining buckets, and writes the averages back.
    fn finish(&mut self) -> Result<()> {
        self.armed = false;
        if let Some(mut order) = self.ready_order.take() {
            self.rebuild(&mut order)?;
            self.clear();
        }
        for i in 0..self.params.len() {
            if !self.copied[i] {
                self.copy_in(i);
            }
        }
        self.start_full_buckets();
        for (b, work) in std::mem::take(&mut self.works).into_iter().enumerate() {
            if let Err(e) = work.wait() {
                self.error.get_or_insert(collective(e));
            }
            if self.error.is_some() {
                continue; // wait for every started collective before reporting
            }
            self.buckets.buckets[b].write_back(|i| self.params[i].grad());
        }
        match self.error.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Lays the buckets out in rank 0's ready order (every rank must agree on the layout).
    fn rebuild(&mut self, order: &mut Vec<usize>) -> Result<()> {
        let mut seen = vec![false; self.params.len()];
        order.iter().for_each(|&i| seen[i] = true);
        order.extend((0..self.params.len()).filter(|&i| !seen[i]));
        let mut shared = Tensor::from_slice(&order.iter().map(|&i| i as i64).collect::<Vec<_>>());
        self.group.broadcast(&mut shared, 0).map_err(collective)?;
        let order: Vec<usize> = Vec::<i64>::try_from(&shared)
            .map_err(|e| Error::Distributed(format!("bucket order: {e}")))?
            .into_iter()
            .map(|i| i as usize)
            .collect();
        self.lay_out(&order);
        Ok(())
    }
}

/// What ranks keep identical: every variable of a task's var stores, and among them the
/// buffers (variables that are not trained by gradient, like batch-norm statistics).
pub struct Replicated {
    group: Arc<ProcessGroup>,
    all: Vec<Tensor>,
    all_buckets: Buckets,
    buffers: Vec<Tensor>,
    buffer_buckets: Buckets,
}

impl Replicated {
    /// The variables of `trainable` and of `followers` (stores of the same architecture,
    /// like DINO's teacher, whose variables named as `trainable`'s buffers are buffers too).
    pub fn new(group: Arc<ProcessGroup>, trainable: &VarStore, followers: &[&VarStore]) -> Self {
        let buffer_names: Vec<String> = sorted(trainable)
            .into_iter()
            .filter(|(_, t)| !t.requires_grad())
            .map(|(name, _)| name)
            .collect();
        let mut all = Vec::new();
        let mut buffers = Vec::new();
        for vs in std::iter::once(trainable).chain(followers.iter().copied()) {
            for (name, t) in sorted(vs) {
                if buffer_names.contains(&name) {
                    buffers.push(t.shallow_clone());
                }
                all.push(t);
            }
        }
        Replicated {
            all_buckets: Buckets::new(&all),
            buffer_buckets: Buckets::new(&buffers),
            group,
            all,
            buffers,
        }
    }

    /// Every variable from rank 0 (at the start, and after restoring a checkpoint).
    pub fn broadcast_all(&self) -> Result<()> {
        self.broadcast(&self.all, &self.all_buckets)
    }

    /// The buffers from rank 0 (before each step, as DDP's `broadcast_buffers`).
    pub fn broadcast_buffers(&self) -> Result<()> {
        self.broadcast(&self.buffers, &self.buffer_buckets)
    }

    fn broadcast(&self, tensors: &[Tensor], buckets: &Buckets) -> Result<()> {
        if self.group.world_size() == 1 || tensors.is_empty() {
            return Ok(());
        }
        buckets.apply(tensors, |flat| {
            self.group.start_broadcast(flat, 0).map_err(collective)
        })
    }
}

fn sorted(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// The mean over the rows of `t` (`[rows, ...]`) of every rank, as `[1, ...]` (`rows` the
/// same on every rank); a world of one takes `mean_dim` exactly as a single process does.
pub fn global_row_mean(group: &ProcessGroup, t: &Tensor) -> Result<Tensor> {
    if group.world_size() == 1 {
        return Ok(t.mean_dim(0, true, Kind::Float));
    }
    let rows = t.size()[0] * group.world_size() as i64;
    let mut sum = t.sum_dim_intlist(0, true, Kind::Float);
    group.all_reduce(&mut sum).map_err(collective)?;
    Ok(sum / rows as f64)
}

/// The mean of each value over the ranks (for logging the global batch's loss).
pub fn mean_over_ranks(group: &ProcessGroup, values: &[f64]) -> Result<Vec<f64>> {
    if group.world_size() == 1 {
        return Ok(values.to_vec());
    }
    let mut t = Tensor::from_slice(values);
    group.all_reduce(&mut t).map_err(collective)?;
    let sums: Vec<f64> = Vec::try_from(&t).map_err(Error::torch("reading a reduced tensor"))?;
    Ok(sums.iter().map(|s| s / group.world_size() as f64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_keep_kinds_apart_and_respect_the_cap() {
        let big = (BUCKET_BYTES / 4 / 2 + 1) as i64; // just over half a bucket of f32
        let like = vec![
            Tensor::zeros([big], (Kind::Float, Device::Cpu)),
            Tensor::zeros([3], (Kind::Int64, Device::Cpu)),
            Tensor::zeros([big], (Kind::Float, Device::Cpu)),
            Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)),
        ];
        let b = Buckets::new(&like);
        let layout: Vec<Vec<usize>> = b
            .buckets
            .iter()
            .map(|b| b.members.iter().map(|m| m.0).collect())
            .collect();
        assert_eq!(layout, [vec![0], vec![2, 3], vec![1]]);
    }

    #[test]
    fn a_world_of_one_changes_nothing() {
        let group = Arc::new(ProcessGroup::single());
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2, 2], tch::nn::Init::Const(1.5));
        let sync = GradSync::new(group.clone(), vec![w.shallow_clone()]).unwrap();
        sync.backward(&(&w * 2.0).sum(Kind::Float), true).unwrap();
        assert!(
            w.grad()
                .equal(&Tensor::full([2, 2], 2.0, (Kind::Float, Device::Cpu)))
        );
        let replicated = Replicated::new(group.clone(), &vs, &[]);
        replicated.broadcast_all().unwrap();
        let t = Tensor::from_slice(&[1.0f32, 3.0]).view([2, 1]);
        assert!(
            global_row_mean(&group, &t)
                .unwrap()
                .equal(&Tensor::from_slice(&[2.0f32]).view([1, 1]))
        );
        assert_eq!(mean_over_ranks(&group, &[0.5, 2.0]).unwrap(), [0.5, 2.0]);
    }

    #[test]
    fn packing_round_trips_and_zero_fills_missing_gradients() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
        let b = Tensor::from_slice(&[5.0f32]);
        let tensors = vec![a.shallow_clone(), Tensor::new(), b.shallow_clone()];
        let like = vec![
            a.copy(),
            Tensor::zeros([3], (Kind::Float, Device::Cpu)),
            b.copy(),
        ];
        let buckets = Buckets::new(&like);
        let single = ProcessGroup::single();
        let mut seen = Vec::new();
        buckets
            .apply(&tensors, |flat| {
                seen = Vec::<f32>::try_from(&*flat).unwrap();
                let _ = flat.g_mul_scalar_(2.0);
                single.start_all_reduce(flat).map_err(collective)
            })
            .unwrap();
        assert_eq!(seen, [1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 5.0]);
        assert!(a.equal(&Tensor::from_slice(&[2.0f32, 4.0, 6.0, 8.0]).view([2, 2])));
        assert!(b.equal(&Tensor::from_slice(&[10.0f32])));
    }
}
