// Octree lookup and trilinear interpolation of one level's corner features: the twin of one
// iteration of core/field.py:RadianceField.features (TorchGather.corners, TorchGather.interpolate)
// in three launches, without the [N, k] gathered blocks and products (and their gradients)
// that torch's per-corner gather materialises on the way.
//
// - `locate_corners` finds each point's cell, its 8 corner ids and trilinear weights. The caller
//   then either renumbers the ids into the rows a training batch touches (so VQ-AD's softmax runs
//   on those alone) or, at inference, keeps them as rows of the level's fully decoded table;
// - `interpolate_corners` sums the weighted rows of that table;
// - `interpolate_corners_backward` scatters dL/dfeature * weight into the table's gradient.
//
// Points outside [-1, 1]^3 or in unallocated cells get weight 0 (they add nothing), and the ids
// of cell 0's corners, as torch's `cell_corners[clamp(cell, 0)]` gives them. A NaN coordinate
// counts as outside (torch would give NaN features there: NaN x 0).
// Sums use __fmaf_rn explicitly, so the g++ host build of this file (tests/kernel_host.py) rounds
// exactly as the GPU does.
// Integer widths: point, key, cell and row indices are 64-bit (`long long`), sizes 32-bit.

// The Morton index of the cell holding `point` at this level, or -1; `local` gets the point's
// position inside that cell (in [0, 1]^3 when found). Same operations, in the same order, as
// LevelIndex.locate.
__device__ long long find_cell(const float* point, int resolution, const long long* sorted_keys,
                               long long num_cells, const long long* key_to_cell,
                               float local[3]) {
    const float scale = 0.5f * (float)resolution;
    long long cell_xyz[3];
    bool inside = true;
    for (int axis = 0; axis < 3; ++axis) {
        const float x = point[axis];
        inside = inside && x >= -1.0f && x <= 1.0f;
        const float scaled = __fmul_rn(__fadd_rn(x, 1.0f), scale);
        const float cell = fminf(fmaxf(floorf(scaled), 0.0f), (float)(resolution - 1));
        local[axis] = __fsub_rn(scaled, cell);
        cell_xyz[axis] = (long long)cell;
    }
    if (!inside || num_cells == 0) {
        return -1;
    }
    const long long key = (cell_xyz[0] * resolution + cell_xyz[1]) * resolution + cell_xyz[2];
    long long low = 0;
    long long high = num_cells;
    while (low < high) {  // first position with sorted_keys[position] >= key
        const long long middle = (low + high) >> 1;
        if (sorted_keys[middle] < key) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    return (low < num_cells && sorted_keys[low] == key) ? key_to_cell[low] : -1;
}

// Trilinear weight of each corner; corner bits are (x << 2) | (y << 1) | z, as CORNER_OFFSETS.
__device__ void corner_weights(const float local[3], float weight[8]) {
    for (int corner = 0; corner < 8; ++corner) {
        const float wx = (corner & 4) ? local[0] : __fsub_rn(1.0f, local[0]);
        const float wy = (corner & 2) ? local[1] : __fsub_rn(1.0f, local[1]);
        const float wz = (corner & 1) ? local[2] : __fsub_rn(1.0f, local[2]);
        weight[corner] = __fmul_rn(__fmul_rn(wx, wy), wz);
    }
}

extern "C" __global__ void locate_corners(const float* points, long long num_points,
                                          int resolution, const long long* sorted_keys,
                                          long long num_cells, const long long* key_to_cell,
                                          const long long* cell_corners, long long* cell_out,
                                          long long* corner_ids, float* weights) {
    const long long point = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (point >= num_points) {
        return;
    }
    float local[3];
    const long long cell =
        find_cell(points + 3 * point, resolution, sorted_keys, num_cells, key_to_cell, local);
    float weight[8];
    corner_weights(local, weight);
    const long long* corners = cell_corners + 8 * (cell < 0 ? 0 : cell);
    cell_out[point] = cell;
    for (int corner = 0; corner < 8; ++corner) {
        corner_ids[8 * point + corner] = num_cells == 0 ? 0 : corners[corner];
        weights[8 * point + corner] = cell < 0 ? 0.0f : weight[corner];
    }
}

// One thread per (point, channel), so a warp reads and writes whole feature rows.
extern "C" __global__ void interpolate_corners(const float* weights, const long long* rows,
                                               long long num_points, const float* table,
                                               int feature_dim, float* features) {
    const long long item = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (item >= num_points * feature_dim) {
        return;
    }
    const long long point = item / feature_dim;
    const int channel = (int)(item - point * feature_dim);
    float sum = 0.0f;
    for (int corner = 0; corner < 8; ++corner) {
        const long long row = rows[8 * point + corner];
        sum = __fmaf_rn(weights[8 * point + corner], table[row * feature_dim + channel], sum);
    }
    features[item] = sum;
}

// dL/dtable[row] = sum over (point, corner) using that row of weight * dL/dfeatures[point];
// `grad_table` must be zero-filled by the caller.
//
// One thread per (run of `points_per_thread` consecutive points, channel). Consecutive points
// are mostly samples of one voxel along one ray and share their 8 rows, so a thread keeps a sum
// per corner while that corner's row stays the same and issues one atomic add when it changes:
// on the coarse levels, where a few hundred corners take a whole batch's gradient, that divides
// the contended atomics by up to `points_per_thread`.
extern "C" __global__ void interpolate_corners_backward(const float* weights,
                                                        const long long* rows,
                                                        long long num_points,
                                                        const float* grad_features,
                                                        int feature_dim, int points_per_thread,
                                                        float* grad_table) {
    const long long item = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long num_runs = (num_points + points_per_thread - 1) / points_per_thread;
    if (item >= num_runs * feature_dim) {
        return;
    }
    const long long run = item / feature_dim;
    const int channel = (int)(item - run * feature_dim);
    const long long first = run * points_per_thread;
    const long long end =
        first + points_per_thread < num_points ? first + points_per_thread : num_points;
    long long row[8];
    float sum[8];
    for (int corner = 0; corner < 8; ++corner) {
        row[corner] = -1;
        sum[corner] = 0.0f;
    }
    for (long long point = first; point < end; ++point) {
        const float grad = grad_features[point * feature_dim + channel];
        for (int corner = 0; corner < 8; ++corner) {
            const long long point_row = rows[8 * point + corner];
            if (point_row != row[corner]) {
                if (row[corner] >= 0 && sum[corner] != 0.0f) {
                    atomicAdd(grad_table + row[corner] * feature_dim + channel, sum[corner]);
                }
                row[corner] = point_row;
                sum[corner] = 0.0f;
            }
            sum[corner] = __fmaf_rn(weights[8 * point + corner], grad, sum[corner]);
        }
    }
    for (int corner = 0; corner < 8; ++corner) {
        if (row[corner] >= 0 && sum[corner] != 0.0f) {
            atomicAdd(grad_table + row[corner] * feature_dim + channel, sum[corner]);
        }
    }
}
