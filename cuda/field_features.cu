// Octree lookup and trilinear interpolation of one level's corner features: the twin of one
// iteration of core/field.py:RadianceField.features (TorchGather.corners, TorchGather.interpolate)
// without the [N, 8, k] temporaries that torch materialises and saves for its backward pass.
//
// Three uses share the device functions below:
// - training, forward: `locate_corners` finds each point's cell, its 8 corner ids and trilinear
//   weights; the caller renumbers the ids into the rows the batch touches (so VQ-AD's softmax
//   runs on those alone) and `interpolate_corners` sums the weighted rows of that table;
// - training, backward: `interpolate_corners_backward` scatters dL/dfeature * weight into the
//   table's gradient (atomic adds: corners are shared by neighbouring points);
// - inference: `gather_level_features` does lookup and sum in one pass over a level's fully
//   decoded corner table and accumulates into `features`, level after level.
//
// Points outside [-1, 1]^3 or in unallocated cells get weight 0 (they add nothing), and the ids
// of cell 0's corners, as torch's `cell_corners[clamp(cell, 0)]` gives them.
// Integer widths: point, key, cell and corner indices are 64-bit (`long long`), sizes 32-bit.

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

// The cell holding point `point` of `points` (or -1) and its corners' trilinear weights.
__device__ long long locate_point(const float* points, long long point, int resolution,
                                  const long long* sorted_keys, long long num_cells,
                                  const long long* key_to_cell, float weight[8]) {
    float local[3];
    const long long cell =
        find_cell(points + 3 * point, resolution, sorted_keys, num_cells, key_to_cell, local);
    corner_weights(local, weight);
    return cell;
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
    float weight[8];
    const long long cell =
        locate_point(points, point, resolution, sorted_keys, num_cells, key_to_cell, weight);
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
        sum += weights[8 * point + corner] * table[row * feature_dim + channel];
    }
    features[item] = sum;
}

// dL/dtable[row] = sum over (point, corner) using that row of weight * dL/dfeatures[point].
// `grad_table` must be zero-filled by the caller.
extern "C" __global__ void interpolate_corners_backward(const float* weights,
                                                        const long long* rows,
                                                        long long num_points,
                                                        const float* grad_features,
                                                        int feature_dim, float* grad_table) {
    const long long item = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (item >= num_points * feature_dim) {
        return;
    }
    const long long point = item / feature_dim;
    const int channel = (int)(item - point * feature_dim);
    const float grad = grad_features[item];
    if (grad == 0.0f) {
        return;
    }
    for (int corner = 0; corner < 8; ++corner) {
        const float weight = weights[8 * point + corner];
        if (weight != 0.0f) {
            const long long row = rows[8 * point + corner];
            atomicAdd(grad_table + row * feature_dim + channel, weight * grad);
        }
    }
}

extern "C" __global__ void gather_level_features(const float* points, long long num_points,
                                                 int resolution, const long long* sorted_keys,
                                                 long long num_cells,
                                                 const long long* key_to_cell,
                                                 const long long* cell_corners,
                                                 const float* table, int feature_dim,
                                                 float* features) {
    const long long point = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (point >= num_points) {
        return;
    }
    float weight[8];
    const long long cell =
        locate_point(points, point, resolution, sorted_keys, num_cells, key_to_cell, weight);
    if (cell < 0) {
        return;
    }
    long long corner_row[8];
    for (int corner = 0; corner < 8; ++corner) {
        corner_row[corner] = cell_corners[8 * cell + corner] * feature_dim;
    }
    float* out = features + point * feature_dim;
    for (int channel = 0; channel < feature_dim; ++channel) {
        float level_sum = 0.0f;
        for (int corner = 0; corner < 8; ++corner) {
            level_sum += weight[corner] * table[corner_row[corner] + channel];
        }
        out[channel] += level_sum;
    }
}
