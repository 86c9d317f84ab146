// Fused octree lookup and trilinear gather of one level's corner features, for inference:
// the twin of one iteration of core/field.py:RadianceField.features (LevelIndex.locate, the
// 8-corner gather and the weighted sum) without its [N, 8, k] temporaries and ~20 launches.
//
// One thread per point. The point's cell at this level is found by binary search over the
// level's sorted linear keys (x R + y) R + z; points outside [-1, 1]^3 or in unallocated cells
// add nothing, as in torch. `table` holds the level's decoded corner features [M, k] (for VQ-AD:
// codebook[argmax(logits)], built once per render call); the weighted sum of the 8 corners is
// added to `features` [N, k], which the caller zero-fills and accumulates level by level.
//
// Integer widths: point, key and cell indices are 64-bit (`long long`), sizes 32-bit (`int`).

extern "C" __global__ void gather_level_features(const float* points, long long num_points,
                                                 int resolution, const long long* sorted_keys,
                                                 long long num_cells,
                                                 const long long* key_to_cell,
                                                 const long long* cell_corners,
                                                 const float* table, int feature_dim,
                                                 float* features) {
    const long long point = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (point >= num_points || num_cells == 0) {
        return;
    }
    const float scale = 0.5f * (float)resolution;
    float local[3];
    long long cell_xyz[3];
    for (int axis = 0; axis < 3; ++axis) {
        const float x = points[3 * point + axis];
        if (!(x >= -1.0f && x <= 1.0f)) {
            return;
        }
        const float scaled = __fmul_rn(__fadd_rn(x, 1.0f), scale);
        const float cell = fminf(fmaxf(floorf(scaled), 0.0f), (float)(resolution - 1));
        local[axis] = __fsub_rn(scaled, cell);
        cell_xyz[axis] = (long long)cell;
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
    if (low == num_cells || sorted_keys[low] != key) {
        return;
    }
    const long long cell = key_to_cell[low];
    long long corner_row[8];
    float weight[8];
    for (int corner = 0; corner < 8; ++corner) {
        const float wx = (corner & 4) ? local[0] : __fsub_rn(1.0f, local[0]);
        const float wy = (corner & 2) ? local[1] : __fsub_rn(1.0f, local[1]);
        const float wz = (corner & 1) ? local[2] : __fsub_rn(1.0f, local[2]);
        weight[corner] = __fmul_rn(__fmul_rn(wx, wy), wz);
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
