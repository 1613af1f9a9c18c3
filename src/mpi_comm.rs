//! The MPI transport of data-parallel training (cargo feature `mpi`): [`Mpi`] implements
//! [`Collective`] over MPI_COMM_WORLD (rsmpi, against MPICH or Open MPI). Launched by `mpiexec -n W`
//! or SLURM's `srun`, every process runs the same command; the rank and world size come from MPI.
//!
//! A transport error aborts the job (MPI's default error handler), and a command that fails on one
//! rank calls [`abort`] so that the others do not wait forever in a collective.

use crate::train::parallel::{Collective, Overlap};
use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

/// Whether this process was started by an MPI launcher (mpiexec / mpirun of MPICH or Open MPI,
/// SLURM's srun with PMI or PMIx): then `resnet train` joins the job.
pub fn launched() -> bool {
    ["PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE"].iter().any(|v| std::env::var_os(v).is_some())
}

/// MPI, initialised: finalised when dropped.
pub struct Session {
    _universe: mpi::environment::Universe,
    pub group: std::sync::Arc<Mpi>,
}

/// Initialise MPI (once per process).
pub fn init() -> anyhow::Result<Session> {
    // collectives are called from one thread at a time, not always the main one (BN's sums run
    // where the network's forward runs)
    // (and the overlapped gradient all-reduce calls them from a thread of its own, on a
    // communicator of its own, at the same time: that needs MPI_THREAD_MULTIPLE)
    let (universe, level) = mpi::initialize_with_threading(mpi::Threading::Multiple)
        .ok_or_else(|| anyhow::anyhow!("MPI was initialised already"))?;
    if level < mpi::Threading::Serialized {
        anyhow::bail!("this MPI library cannot be called from more than one thread ({level:?})");
    }
    let world = universe.world();
    let group =
        Mpi { rank: world.rank() as usize, size: world.size() as usize, multiple: level == mpi::Threading::Multiple };
    Ok(Session { _universe: universe, group: std::sync::Arc::new(group) })
}

/// End the whole job (MPI_Abort on MPI_COMM_WORLD) with exit code `code`.
pub fn abort(code: i32) -> ! {
    SimpleCommunicator::world().abort(code)
}

/// The processes of MPI_COMM_WORLD.
pub struct Mpi {
    rank: usize,
    size: usize,
    /// MPI_THREAD_MULTIPLE: a second thread may run collectives (on its own communicator)
    multiple: bool,
}

/// Element-wise sum over `comm`'s processes, in place.
fn sum_on<T: Equivalence + Copy>(comm: &impl Communicator, v: &mut [T]) {
    for piece in v.chunks_mut(PIECE) {
        let send = piece.to_vec();
        comm.all_reduce_into(&send[..], piece, SystemOperation::sum());
    }
}

fn world() -> SimpleCommunicator {
    SimpleCommunicator::world()
}

/// Largest piece one call moves (MPI counts are 32-bit).
const PIECE: usize = 1 << 28;

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn sum_f32(&self, v: &mut [f32]) {
        sum_on(&world(), v)
    }
    fn sum_f64(&self, v: &mut [f64]) {
        sum_on(&world(), v)
    }
    fn gather_f32(&self, v: &[f32], all: &mut [f32]) {
        world().all_gather_into(v, all);
    }
    fn gather_f64(&self, v: &[f64], all: &mut [f64]) {
        world().all_gather_into(v, all);
    }
    fn broadcast_f32(&self, v: &mut [f32]) {
        let w = world();
        let root = w.process_at_rank(0);
        for piece in v.chunks_mut(PIECE) {
            root.broadcast_into(piece);
        }
    }
    fn broadcast_bytes(&self, v: &mut Vec<u8>) {
        let w = world();
        let root = w.process_at_rank(0);
        let mut len = v.len() as u64;
        root.broadcast_into(&mut len);
        v.resize(len as usize, 0);
        for piece in v.chunks_mut(PIECE) {
            root.broadcast_into(piece);
        }
    }
    fn overlap(&self, exact: bool) -> Option<Overlap> {
        if !self.multiple {
            return None;
        }
        let size = self.size;
        Some(Overlap::spawn(move || {
            // MPI_Comm_dup is collective over the world: every rank's main thread waits here
            // (Overlap::spawn returns once this has run), so no other world collective interleaves
            let comm = world().duplicate();
            Box::new(move |v: &mut [f32]| {
                if exact && size > 2 {
                    let mut all = vec![0.0f32; v.len() * size];
                    comm.all_gather_into(&*v, &mut all[..]);
                    crate::train::parallel::tree_over_ranks(&all, v);
                } else {
                    sum_on(&comm, v)
                }
            })
        }))
    }
    fn agree(&self, value: u64) -> bool {
        let (mut lo, mut hi) = (0u64, 0u64);
        world().all_reduce_into(&value, &mut lo, SystemOperation::min());
        world().all_reduce_into(&value, &mut hi, SystemOperation::max());
        lo == hi
    }
}
