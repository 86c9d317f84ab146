// Ray-octree traversal at one level: every occupied cell of `level` that a ray crosses, front
// to back. Twin of core/raymarch.py:OctreeTracer, which it must match exactly (same hits, same
// order, same float t values), so the parity test can compare hit lists with equality.
//
// Layout (built by core/gpu/octree_tables.py): the cells of levels 0..level are concatenated into
// one "node" array. Node n is the box [cell_min[n], cell_min[n] + 2^(1 - depth)]^3 in double
// precision (the torch tracer's own buffers), and children[8 n + c] is the node id of child c
// (c = 4 x + 2 y + z) or -1. Only nodes above `level` have a children row.
//
// Why a depth-first walk per ray instead of kaolin's level-synchronous nuggets: one thread owns
// one ray, so its hits come out contiguous and almost sorted, with no global sort; trace_count
// counts, a scan of the counts (torch.cumsum) gives each ray its output segment, and
// trace_write repeats the walk, writes the segment and insertion-sorts it by (t_in, cell), the
// key the torch tracer's stable sorts produce (ties keep Morton order, i.e. cell index order).
// trace_write writes ray r's slots offsets[r] .. offsets[r + 1] - 1 and no others, and all of
// them, even if its walk were to find another number of hits than trace_count's did (the same
// code on the same data, so only a fault could make them differ): extra hits are dropped and
// missing ones become zero-length hits at the ray's last exit (no weight, no samples' step),
// so no output is left unwritten and no other ray's slots are touched.
//
// Culling: with `cell_occupied` (one byte per cell of `level`, the occupancy grid's
// cell_occupied) a cell whose byte is 0 is no hit, as if it were not allocated; nullptr keeps
// every cell. The walk still descends through such cells' ancestors, so the kept hits and their
// order are those of the unculled list less the culled cells (what Culling.occupied_hits does
// to the torch tracer's list).
//
// Exactness: the slab test uses __d*_rn intrinsics, so the compiler cannot contract a multiply
// and an add into an FMA whose different rounding would flip a grazing hit.
//
// Integer widths: ray and hit indices are 64-bit (`long long`), node ids 32-bit (`int`).

#define MAX_LEVEL 12
#define STACK_CAPACITY (7 * MAX_LEVEL + 1)
#define MIN_DIRECTION 1e-9

struct TraceRay {
    double origin[3];
    double inverse[3];
    int near_child;  // the child octant the ray enters first (visit order hint only)
};

__device__ TraceRay load_ray(const float* origins, const float* directions, long long ray) {
    TraceRay r;
    r.near_child = 0;
    for (int axis = 0; axis < 3; ++axis) {
        const double direction = (double)directions[3 * ray + axis];
        // torch: where(|d| < 1e-9, 1e-9, d); 1 / safe is an IEEE division for doubles.
        const double safe = fabs(direction) < MIN_DIRECTION ? MIN_DIRECTION : direction;
        r.origin[axis] = (double)origins[3 * ray + axis];
        r.inverse[axis] = 1.0 / safe;
        if (direction < 0.0) {
            r.near_child |= 4 >> axis;
        }
    }
    return r;
}

// Entry and exit distance of the ray through an axis-aligned box (the torch `_slab`).
__device__ void slab(const TraceRay& r, const double* box_min, double size, double* t_in,
                     double* t_out) {
    double enter = 0.0;
    double leave = 0.0;
    for (int axis = 0; axis < 3; ++axis) {
        const double near_t = __dmul_rn(__dsub_rn(box_min[axis], r.origin[axis]), r.inverse[axis]);
        const double far_t = __dmul_rn(
            __dsub_rn(__dadd_rn(box_min[axis], size), r.origin[axis]), r.inverse[axis]);
        const double low = fmin(near_t, far_t);
        const double high = fmax(near_t, far_t);
        enter = axis == 0 ? low : fmax(enter, low);
        leave = axis == 0 ? high : fmin(leave, high);
    }
    *t_in = enter;
    *t_out = leave;
}

// Walks the tree below the root for one ray and returns the number of hits in kept cells (all
// cells where `cell_occupied` is nullptr). With WRITE false it only counts them; with WRITE true
// it stores the first `capacity` of them from `first` on (node id relative to the level, t in
// double).
template <bool WRITE>
__device__ long long walk(const TraceRay& r, long long ray, const double* cell_min,
                          const int* children, int level, int level_start, int num_roots,
                          const unsigned char* cell_occupied, long long first,
                          long long capacity, long long* ray_index, long long* cell_index,
                          double* t_in_scratch, double* t_out_scratch) {
    int node_stack[STACK_CAPACITY];
    int depth_stack[STACK_CAPACITY];
    int top = 0;
    if (num_roots > 0) {
        node_stack[0] = 0;
        depth_stack[0] = 0;
        top = 1;
    }
    long long count = 0;
    while (top > 0) {
        --top;
        const int node = node_stack[top];
        const int depth = depth_stack[top];
        double t_in;
        double t_out;
        slab(r, cell_min + 3 * (long long)node, 2.0 / (double)(1 << depth), &t_in, &t_out);
        const double t_front = t_in < 0.0 ? 0.0 : t_in;
        if (!(t_out > t_front)) {
            continue;
        }
        if (depth == level) {
            if (cell_occupied != nullptr && cell_occupied[node - level_start] == 0) {
                continue;
            }
            if (WRITE && count < capacity) {
                ray_index[first + count] = ray;
                cell_index[first + count] = (long long)(node - level_start);
                t_in_scratch[first + count] = t_front;
                t_out_scratch[first + count] = t_out;
            }
            ++count;
            continue;
        }
        // Push far children first so the near ones pop first: output comes out nearly sorted.
        for (int order = 7; order >= 0; --order) {
            const int child = children[8 * (long long)node + (order ^ r.near_child)];
            if (child >= 0) {
                node_stack[top] = child;
                depth_stack[top] = depth + 1;
                ++top;
            }
        }
    }
    return count;
}

extern "C" __global__ void trace_count(const float* origins, const float* directions,
                                       int num_rays, const double* cell_min, const int* children,
                                       int level, int level_start, int num_roots,
                                       const unsigned char* cell_occupied, long long* counts) {
    const long long ray = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (ray >= num_rays) {
        return;
    }
    const TraceRay r = load_ray(origins, directions, ray);
    counts[ray] = walk<false>(r, ray, cell_min, children, level, level_start, num_roots,
                              cell_occupied, 0, 0, nullptr, nullptr, nullptr, nullptr);
}

// `offsets` [num_rays + 1]: ray r owns the output slots offsets[r] .. offsets[r + 1] - 1 (0, then
// the inclusive scan of trace_count's counts).
extern "C" __global__ void trace_write(const float* origins, const float* directions,
                                       int num_rays, const double* cell_min, const int* children,
                                       int level, int level_start, int num_roots,
                                       const unsigned char* cell_occupied,
                                       const long long* offsets, long long* ray_index,
                                       long long* cell_index, double* t_in_scratch,
                                       double* t_out_scratch, float* t_in, float* t_out) {
    const long long ray = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (ray >= num_rays) {
        return;
    }
    const TraceRay r = load_ray(origins, directions, ray);
    const long long first = offsets[ray];
    const long long capacity = offsets[ray + 1] - first;
    const long long found = walk<true>(r, ray, cell_min, children, level, level_start, num_roots,
                                       cell_occupied, first, capacity, ray_index, cell_index,
                                       t_in_scratch, t_out_scratch);
    const long long count = found < capacity ? found : capacity;
    // Insertion sort of this ray's segment by (t_in, cell): O(count) when already in order.
    for (long long i = first + 1; i < first + count; ++i) {
        const double key_t = t_in_scratch[i];
        const long long key_cell = cell_index[i];
        const double key_out = t_out_scratch[i];
        long long j = i - 1;
        while (j >= first && (t_in_scratch[j] > key_t ||
                              (t_in_scratch[j] == key_t && cell_index[j] > key_cell))) {
            t_in_scratch[j + 1] = t_in_scratch[j];
            cell_index[j + 1] = cell_index[j];
            t_out_scratch[j + 1] = t_out_scratch[j];
            --j;
        }
        t_in_scratch[j + 1] = key_t;
        cell_index[j + 1] = key_cell;
        t_out_scratch[j + 1] = key_out;
    }
    const double last_exit = count > 0 ? t_out_scratch[first + count - 1] : 0.0;
    const long long last_cell = count > 0 ? cell_index[first + count - 1] : 0;
    for (long long i = first + count; i < first + capacity; ++i) {
        ray_index[i] = ray;
        cell_index[i] = last_cell;
        t_in_scratch[i] = last_exit;
        t_out_scratch[i] = last_exit;
    }
    for (long long i = first; i < first + capacity; ++i) {
        t_in[i] = (float)t_in_scratch[i];
        t_out[i] = (float)t_out_scratch[i];
    }
}
