// Stratified samples inside hit voxels: twin of core/raymarch.py:sample_hits.
//
// One thread per sample. Sample k of a hit sits at t_in + length * (k + jitter) / count with
// step length / count; its point is origin + direction * t. The float operations are spelled
// with __f*_rn intrinsics in torch's evaluation order so that, with the bin-centre jitter of
// inference (0.5), every output equals the torch path bit for bit.
//
// Training jitter comes from a counter-based hash of (seed, sample index) instead of torch's
// CPU generator: no [hits, count] random tensor is drawn on the host and copied over, and the
// seed itself is drawn from the caller's generator, so runs stay reproducible and resumable.
//
// Integer widths: hit and sample indices are 64-bit (`long long`), the count per voxel 32-bit.

__device__ float hashed_uniform(unsigned long long seed, long long index) {
    // SplitMix64 finaliser of a Weyl sequence: a good 64-bit mix for consecutive indices.
    unsigned long long z = seed + (unsigned long long)(index + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);  // 24 random bits: uniform in [0, 1)
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
    const long long ray = hit_ray[hit];
    const float t_in = hit_t_in[hit];
    const float length = __fsub_rn(hit_t_out[hit], t_in);
    const float jitter = jittered ? hashed_uniform(seed, sample) : 0.5f;
    const float count = (float)samples_per_voxel;
    const float position = __fdiv_rn(__fmul_rn(length, __fadd_rn((float)bin, jitter)), count);
    const float distance = __fadd_rn(t_in, position);
    ray_index[sample] = ray;
    t[sample] = distance;
    step[sample] = __fdiv_rn(length, count);
    for (int axis = 0; axis < 3; ++axis) {
        points[3 * sample + axis] =
            __fadd_rn(origins[3 * ray + axis], __fmul_rn(directions[3 * ray + axis], distance));
    }
}
