// Packed volumetric compositing: twin of core/raymarch.py:composite, plus its backward pass and
// the per-round step of inference with early ray termination (core/render.py's
// render_rays_early_exit).
//
// Samples are packed by ray: ray r owns samples offsets[r] .. offsets[r + 1] - 1, front to back.
// One thread per ray walks its samples in order, so the exclusive sum of optical depth that
// torch builds with a global float64 cumsum is a running float64 sum here, with no cancellation
// between rays. tau_i = density_i * step_i, T_i = exp(-sum_{j<i} tau_j),
// w_i = T_i (1 - exp(-tau_i)); colour = sum w_i rgb_i (premultiplied), alpha = sum w_i.
// 1 - exp(-tau_i) is computed as -expm1(-tau_i), as torch does: in float32, 1 - expf(-tau)
// keeps only the digits of tau above 6e-8 (relative error 1e-3 at tau = 1e-6, and 0 below
// ~3e-8), and thin media are what early training sees.
//
// Backward (per ray, back to front, no [P, ...] temporaries besides the saved T):
//   g_i = <dL/dcolour, rgb_i> + dL/dalpha
//   dL/drgb_i = w_i dL/dcolour
//   dL/dtau_i = g_i T_i exp(-tau_i) - sum_{k>i} g_k w_k      (T_i exp(-tau_i) = T_{i+1})
//   dL/ddensity_i = dL/dtau_i * step_i
//
// Integer widths: sample and offset indices are 64-bit (`long long`), ray counts 32-bit.

extern "C" __global__ void composite_forward(const float* density, const float* step,
                                             const float* rgb, const long long* offsets,
                                             int num_rays, float* colour, float* alpha,
                                             float* transmittance) {
    const long long ray = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (ray >= num_rays) {
        return;
    }
    double depth_before = 0.0;
    float red = 0.0f;
    float green = 0.0f;
    float blue = 0.0f;
    float opacity = 0.0f;
    for (long long i = offsets[ray]; i < offsets[ray + 1]; ++i) {
        const float tau = __fmul_rn(density[i], step[i]);
        const float t_i = (float)exp(-depth_before);
        const float w = __fmul_rn(t_i, -expm1f(-tau));
        transmittance[i] = t_i;
        red += w * rgb[3 * i];
        green += w * rgb[3 * i + 1];
        blue += w * rgb[3 * i + 2];
        opacity += w;
        depth_before += (double)tau;
    }
    colour[3 * ray] = red;
    colour[3 * ray + 1] = green;
    colour[3 * ray + 2] = blue;
    alpha[ray] = opacity;
}

extern "C" __global__ void composite_backward(const float* density, const float* step,
                                              const float* rgb, const float* transmittance,
                                              const long long* offsets, int num_rays,
                                              const float* grad_colour, const float* grad_alpha,
                                              float* grad_density, float* grad_rgb) {
    const long long ray = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (ray >= num_rays) {
        return;
    }
    const float grad_c[3] = {grad_colour[3 * ray], grad_colour[3 * ray + 1],
                             grad_colour[3 * ray + 2]};
    const double grad_a = (double)grad_alpha[ray];
    double later = 0.0;  // sum over the samples behind i of g_k w_k
    for (long long i = offsets[ray + 1] - 1; i >= offsets[ray]; --i) {
        const float tau = __fmul_rn(density[i], step[i]);
        const float t_i = transmittance[i];
        const float w = __fmul_rn(t_i, -expm1f(-tau));
        double g = grad_a;
        for (int channel = 0; channel < 3; ++channel) {
            g += (double)grad_c[channel] * (double)rgb[3 * i + channel];
            grad_rgb[3 * i + channel] = w * grad_c[channel];
        }
        const double grad_tau = g * (double)t_i * exp(-(double)tau) - later;
        grad_density[i] = (float)(grad_tau * (double)step[i]);
        later += g * (double)w;
    }
}

// One round of early-exit inference. Ray r's samples of this round are whole voxels
// voxel_offsets[r] .. voxel_offsets[r + 1] - 1, `samples_per_voxel` samples each. Each voxel is
// composited from a fresh start and blended in with the ray's running transmittance, exactly as
// the torch loop does one voxel per round; the ray stops at the first voxel it reaches with
// transmittance at or below the threshold, so several voxels per round change nothing but the
// number of rounds.
extern "C" __global__ void composite_round(const float* density, const float* step,
                                           const float* rgb, const long long* voxel_offsets,
                                           int num_rays, int samples_per_voxel,
                                           float termination_threshold, float* colour,
                                           float* transmittance) {
    const long long ray = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (ray >= num_rays) {
        return;
    }
    float t_ray = transmittance[ray];
    float ray_colour[3] = {colour[3 * ray], colour[3 * ray + 1], colour[3 * ray + 2]};
    for (long long voxel = voxel_offsets[ray]; voxel < voxel_offsets[ray + 1]; ++voxel) {
        if (!(t_ray > termination_threshold)) {
            break;
        }
        double depth_before = 0.0;
        float voxel_colour[3] = {0.0f, 0.0f, 0.0f};
        float voxel_alpha = 0.0f;
        const long long begin = voxel * samples_per_voxel;
        for (long long i = begin; i < begin + samples_per_voxel; ++i) {
            const float tau = __fmul_rn(density[i], step[i]);
            const float t_i = (float)exp(-depth_before);
            const float w = __fmul_rn(t_i, -expm1f(-tau));
            for (int channel = 0; channel < 3; ++channel) {
                voxel_colour[channel] += w * rgb[3 * i + channel];
            }
            voxel_alpha += w;
            depth_before += (double)tau;
        }
        for (int channel = 0; channel < 3; ++channel) {
            ray_colour[channel] = __fadd_rn(ray_colour[channel],
                                            __fmul_rn(t_ray, voxel_colour[channel]));
        }
        t_ray = __fmul_rn(t_ray, __fsub_rn(1.0f, voxel_alpha));
    }
    transmittance[ray] = t_ray;
    for (int channel = 0; channel < 3; ++channel) {
        colour[3 * ray + channel] = ray_colour[channel];
    }
}
