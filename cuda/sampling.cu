// Stratified samples inside hit voxels: twin of core/raymarch.py:sample_hits, and of
// core/occupancy.py:Culling, which drops the samples that lie in culled sub-cells.
//
// Sample k of a hit sits at t_in + length * (k + jitter) / count with step length / count; its
// point is origin + direction * t. The float operations are spelled with __f*_rn intrinsics in
// torch's evaluation order so that, with the bin-centre jitter of inference (0.5), every output
// equals the torch path bit for bit.
//
// Training jitter comes from a counter-based hash of (seed, sample index) instead of torch's
// CPU generator: no [hits, count] random tensor is drawn on the host and copied over, and the
// seed itself is drawn from the caller's generator, so runs stay reproducible and resumable.
// The index is the sample's place in the unculled list (hit * count + k) in every kernel here,
// so culling in the kernel keeps exactly the samples (jitter included) that sampling everything
// and culling afterwards would.
//
// Culling (sample_occupied_count / sample_occupied_write for training, mark_occupied_samples
// for inference, which shades whole voxels): a sample is kept when the occupancy sub-cell that
// holds its point is occupied. Sub-cell j of trace cell c is entry c * 8^sub_bits + j; the
// point's integer coordinate at the occupancy level is floor((p + 1) * 2^(level - 1)), clamped
// into the hit's own cell (a point on the cell's boundary, or just past it by rounding, belongs
// to that cell), exactly as Culling._entries computes it. The grids are byte arrays (torch.bool).
//
// Integer widths: hit and sample indices are 64-bit (`long long`), the count per voxel and the
// occupancy level 32-bit (`int`).

__device__ float hashed_uniform(unsigned long long seed, long long index) {
    // SplitMix64 finaliser of a Weyl sequence: a good 64-bit mix for consecutive indices.
    unsigned long long z = seed + (unsigned long long)(index + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);  // 24 random bits: uniform in [0, 1)
}

struct Sample {
    long long ray;
    float t;
    float step;
    float point[3];
};

// Sample `bin` of hit `hit`; `sample` (hit * samples_per_voxel + bin) keys the jitter.
__device__ Sample make_sample(const long long* hit_ray, const float* hit_t_in,
                              const float* hit_t_out, const float* origins,
                              const float* directions, long long hit, int bin,
                              int samples_per_voxel, int jittered, unsigned long long seed) {
    const long long sample = hit * samples_per_voxel + bin;
    Sample s;
    s.ray = hit_ray[hit];
    const float t_in = hit_t_in[hit];
    const float length = __fsub_rn(hit_t_out[hit], t_in);
    const float jitter = jittered ? hashed_uniform(seed, sample) : 0.5f;
    const float count = (float)samples_per_voxel;
    const float position = __fdiv_rn(__fmul_rn(length, __fadd_rn((float)bin, jitter)), count);
    s.t = __fadd_rn(t_in, position);
    s.step = __fdiv_rn(length, count);
    for (int axis = 0; axis < 3; ++axis) {
        s.point[axis] = __fadd_rn(origins[3 * s.ray + axis],
                                  __fmul_rn(directions[3 * s.ray + axis], s.t));
    }
    return s;
}

__device__ void store_sample(const Sample& s, long long slot, long long* ray_index, float* t,
                             float* step, float* points) {
    ray_index[slot] = s.ray;
    t[slot] = s.t;
    step[slot] = s.step;
    for (int axis = 0; axis < 3; ++axis) {
        points[3 * slot + axis] = s.point[axis];
    }
}

// Whether `point`, which lies in (or on the boundary of) trace cell `cell`, is in an occupied
// sub-cell. `trace_cells` [cells, 3] holds the integer coordinates of the trace level's cells.
__device__ bool sample_occupied(const float* point, long long cell, const long long* trace_cells,
                                int level, int sub_bits, const unsigned char* occupied) {
    const float scale = 0.5f * (float)(1LL << level);  // a power of two: the product is exact
    const long long last = (1LL << sub_bits) - 1;
    long long entry = cell;
    for (int axis = 0; axis < 3; ++axis) {
        const long long scaled = (long long)floorf(__fmul_rn(__fadd_rn(point[axis], 1.0f), scale));
        long long local = scaled - (trace_cells[3 * cell + axis] << sub_bits);
        local = local < 0 ? 0 : (local > last ? last : local);
        entry = (entry << sub_bits) | local;
    }
    return occupied[entry] != 0;
}

extern "C" __global__ void sample_voxels(const long long* hit_ray, const float* hit_t_in,
                                         const float* hit_t_out, long long num_hits,
                                         const float* origins, const float* directions,
                                         int samples_per_voxel, int jittered,
                                         unsigned long long seed, long long* ray_index, float* t,
                                         float* step, float* points) {
    const long long sample = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (sample >= num_hits * samples_per_voxel) {
        return;
    }
    const long long hit = sample / samples_per_voxel;
    const int bin = (int)(sample - hit * samples_per_voxel);
    const Sample s = make_sample(hit_ray, hit_t_in, hit_t_out, origins, directions, hit, bin,
                                 samples_per_voxel, jittered, seed);
    store_sample(s, sample, ray_index, t, step, points);
}

// One thread per hit: how many of its samples lie in occupied sub-cells (counts [num_hits]).
extern "C" __global__ void sample_occupied_count(
    const long long* hit_ray, const long long* hit_cell, const float* hit_t_in,
    const float* hit_t_out, long long num_hits, const float* origins, const float* directions,
    int samples_per_voxel, int jittered, unsigned long long seed, const long long* trace_cells,
    int level, int sub_bits, const unsigned char* occupied, long long* counts) {
    const long long hit = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (hit >= num_hits) {
        return;
    }
    long long kept = 0;
    for (int bin = 0; bin < samples_per_voxel; ++bin) {
        const Sample s = make_sample(hit_ray, hit_t_in, hit_t_out, origins, directions, hit, bin,
                                     samples_per_voxel, jittered, seed);
        kept += sample_occupied(s.point, hit_cell[hit], trace_cells, level, sub_bits, occupied);
    }
    counts[hit] = kept;
}

// One thread per hit: its kept samples, in bin order, into slots offsets[hit] ..
// offsets[hit + 1] - 1 (offsets: 0, then the inclusive scan of sample_occupied_count's counts).
// It writes those slots and no others, and all of them: should its count differ from the
// scan's (only a fault could make it), extra samples are dropped and missing ones become
// zero-length samples of the hit's ray at its exit, which weigh nothing.
extern "C" __global__ void sample_occupied_write(
    const long long* hit_ray, const long long* hit_cell, const float* hit_t_in,
    const float* hit_t_out, long long num_hits, const float* origins, const float* directions,
    int samples_per_voxel, int jittered, unsigned long long seed, const long long* trace_cells,
    int level, int sub_bits, const unsigned char* occupied, const long long* offsets,
    long long* ray_index, float* t, float* step, float* points) {
    const long long hit = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (hit >= num_hits) {
        return;
    }
    long long slot = offsets[hit];
    const long long end = offsets[hit + 1];
    for (int bin = 0; bin < samples_per_voxel && slot < end; ++bin) {
        const Sample s = make_sample(hit_ray, hit_t_in, hit_t_out, origins, directions, hit, bin,
                                     samples_per_voxel, jittered, seed);
        if (sample_occupied(s.point, hit_cell[hit], trace_cells, level, sub_bits, occupied)) {
            store_sample(s, slot, ray_index, t, step, points);
            ++slot;
        }
    }
    if (slot < end) {
        Sample exit;
        exit.ray = hit_ray[hit];
        exit.t = hit_t_out[hit];
        exit.step = 0.0f;
        for (int axis = 0; axis < 3; ++axis) {
            exit.point[axis] = __fadd_rn(origins[3 * exit.ray + axis],
                                         __fmul_rn(directions[3 * exit.ray + axis], exit.t));
        }
        for (; slot < end; ++slot) {
            store_sample(exit, slot, ray_index, t, step, points);
        }
    }
}

// One thread per sample of whole voxels (samples_per_voxel per hit, in hit order, as
// sample_voxels makes them): kept[sample] = 1 where its point lies in an occupied sub-cell.
extern "C" __global__ void mark_occupied_samples(const float* points, long long num_samples,
                                                 const long long* hit_cell,
                                                 int samples_per_voxel,
                                                 const long long* trace_cells, int level,
                                                 int sub_bits, const unsigned char* occupied,
                                                 unsigned char* kept) {
    const long long sample = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (sample >= num_samples) {
        return;
    }
    const long long cell = hit_cell[sample / samples_per_voxel];
    kept[sample] = sample_occupied(points + 3 * sample, cell, trace_cells, level, sub_bits,
                                   occupied);
}
