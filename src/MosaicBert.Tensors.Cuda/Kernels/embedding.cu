// Row lookups and row scatters (embeddings, MLM gathers). Indices are validated on the host before any launch, so the
// kernels trust them. Scatters with possibly repeated indices use a segment list built on the host (positions
// grouped by destination row, each group in ascending position order): one thread per (destination row, column)
// walks its group in order, so repeated rows accumulate in the CPU's order without atomics: the result is bitwise
// deterministic and equal to the CPU's.
#include "common.cuh"

// out[t] = word[ids[t]] + type[types[t]] (+ position[positions[t]]), summed in that order.
extern "C" __global__ void embedding_sum(const int* ids, const int* types, const int* positions, const float* word,
    const float* type, const float* position, float* out, i64 n, int d)
{
    FOR_EACH(i, n * d)
    {
        i64 t = i / d, c = i - t * d;
        float v = word[(i64)ids[t] * d + c] + type[(i64)types[t] * d + c];
        if (position) v += position[(i64)positions[t] * d + c];
        out[i] = v;
    }
}

// dst[k] = src[indices[k]] (rows of width floats)
extern "C" __global__ void gather_rows(const float* src, const int* indices, float* dst, i64 k, int width)
{
    FOR_EACH(i, k * width)
    {
        i64 r = i / width, c = i - r * width;
        dst[i] = src[(i64)indices[r] * width + c];
    }
}

// Segment s = positions order[start[s] .. start[s+1]) (ascending), all with destination row rowOf[s].
// Block (s, column block). accumulate ≠ 0: dst[row] += src[p] for each p in order (scatter-add);
// accumulate = 0: dst[row] = src[last p] (a plain scatter: the last write wins, as on the CPU).
extern "C" __global__ void scatter_segments(const float* src, const int* order, const int* start, const int* rowOf,
    float* dst, int width, int accumulate)
{
    int s = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= width) return;
    int p0 = start[s], p1 = start[s + 1];
    float* out = dst + (i64)rowOf[s] * width + c;
    if (!accumulate)
    {
        *out = src[(i64)order[p1 - 1] * width + c];
        return;
    }
    float acc = *out;
    for (int p = p0; p < p1; p++) acc += src[(i64)order[p] * width + c];
    *out = acc;
}
