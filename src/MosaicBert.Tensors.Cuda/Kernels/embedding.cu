// Row lookups and row scatters (embeddings, MLM gathers), for float or bf16 rows. Indices are validated on the host
// before any launch, so the kernels trust them. Scatters with possibly repeated indices use a segment list built on
// the host (positions grouped by destination row, each group in ascending position order): one thread per
// (destination row, column) walks its group in order, so repeated rows accumulate in the CPU's order without atomics:
// the result is bitwise deterministic and equal to the CPU's (in fp32; a bf16 destination rounds once per row).
#include "common.cuh"

// out[t] = word[ids[t]] + type[types[t]] (+ position[positions[t]]), summed in that order (fp32, then stored).
template <typename T> __forceinline__ void embedding_sum_t(const int* ids, const int* types, const int* positions, const T* word,
    const T* type, const T* position, T* out, i64 n, int d)
{
    FOR_EACH(i, n * d)
    {
        i64 t = i / d, c = i - t * d;
        float v = to_f(word[(i64)ids[t] * d + c]) + to_f(type[(i64)types[t] * d + c]);
        if (position) v += to_f(position[(i64)positions[t] * d + c]);
        out[i] = from_f<T>(v);
    }
}
extern "C" __global__ void embedding_sum(const int* ids, const int* types, const int* positions, const float* word,
    const float* type, const float* position, float* out, i64 n, int d)
{
    embedding_sum_t(ids, types, positions, word, type, position, out, n, d);
}
extern "C" __global__ void embedding_sum_bf16(const int* ids, const int* types, const int* positions, const bf16* word,
    const bf16* type, const bf16* position, bf16* out, i64 n, int d)
{
    embedding_sum_t(ids, types, positions, word, type, position, out, n, d);
}

// dst[k] = src[indices[k]] (rows of width elements)
template <typename T> __forceinline__ void gather_rows_t(const T* src, const int* indices, T* dst, i64 k, int width)
{
    FOR_EACH(i, k * width)
    {
        i64 r = i / width, c = i - r * width;
        dst[i] = src[(i64)indices[r] * width + c];
    }
}
extern "C" __global__ void gather_rows(const float* src, const int* indices, float* dst, i64 k, int width) { gather_rows_t(src, indices, dst, k, width); }
extern "C" __global__ void gather_rows_bf16(const bf16* src, const int* indices, bf16* dst, i64 k, int width) { gather_rows_t(src, indices, dst, k, width); }

// Segment s = positions order[start[s] .. start[s+1]) (ascending), all with destination row rowOf[s].
// Block (s, column block). accumulate ≠ 0: dst[row] += src[p] for each p in order (scatter-add, summed in fp32 and
// stored once); accumulate = 0: dst[row] = src[last p] (a plain scatter: the last write wins, as on the CPU).
template <typename S, typename D> __forceinline__ void scatter_segments_t(const S* src, const int* order, const int* start, const int* rowOf,
    D* dst, int width, int accumulate)
{
    int s = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= width) return;
    int p0 = start[s], p1 = start[s + 1];
    D* out = dst + (i64)rowOf[s] * width + c;
    if (!accumulate)
    {
        *out = from_f<D>(to_f(src[(i64)order[p1 - 1] * width + c]));
        return;
    }
    float acc = to_f(*out);
    for (int p = p0; p < p1; p++) acc += to_f(src[(i64)order[p] * width + c]);
    *out = from_f<D>(acc);
}
extern "C" __global__ void scatter_segments(const float* src, const int* order, const int* start, const int* rowOf,
    float* dst, int width, int accumulate)
{
    scatter_segments_t(src, order, start, rowOf, dst, width, accumulate);
}
extern "C" __global__ void scatter_segments_bf16(const bf16* src, const int* order, const int* start, const int* rowOf,
    bf16* dst, int width, int accumulate)
{
    scatter_segments_t(src, order, start, rowOf, dst, width, accumulate);
}
// bf16 rows into fp32 rows (activation gradients into embedding-table gradients).
extern "C" __global__ void scatter_segments_bf16_f32(const bf16* src, const int* order, const int* start, const int* rowOf,
    float* dst, int width, int accumulate)
{
    scatter_segments_t(src, order, start, rowOf, dst, width, accumulate);
}

// Scatter-add of bf16 rows with long segments split into pieces of at most a fixed length (a token repeated thousands
// of times in a batch, e.g. [MASK], or a single token type, would otherwise be one thread's sequential loop).
// Piece q = positions order[pieceStart[q] .. pieceStart[q+1]); target[q] ≥ 0: added straight into that destination row;
// target[q] = −slot − 1: its sum goes to partial[slot] (fp32), and finish_pieces then adds the slots of each long
// segment, in order, into its row. Fixed orders throughout: deterministic (not the CPU's single left-to-right sum).
template <typename S, typename D> __forceinline__ void scatter_pieces_t(const S* src, const int* order, const int* pieceStart,
    const int* target, D* dst, float* partial, int width)
{
    int q = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= width) return;
    float acc = 0.f;
    for (int p = pieceStart[q]; p < pieceStart[q + 1]; p++) acc += to_f(src[(i64)order[p] * width + c]);
    int t = target[q];
    if (t >= 0)
    {
        D* out = dst + (i64)t * width + c;
        *out = from_f<D>(to_f(*out) + acc);
    }
    else partial[(i64)(-t - 1) * width + c] = acc;
}
extern "C" __global__ void scatter_pieces_bf16(const bf16* src, const int* order, const int* pieceStart, const int* target,
    bf16* dst, float* partial, int width)
{
    scatter_pieces_t(src, order, pieceStart, target, dst, partial, width);
}
extern "C" __global__ void scatter_pieces_bf16_f32(const bf16* src, const int* order, const int* pieceStart, const int* target,
    float* dst, float* partial, int width)
{
    scatter_pieces_t(src, order, pieceStart, target, dst, partial, width);
}

// Long segment s: dst[row[s]] += Σ partial[first[s] .. first[s+1]) in slot order.
template <typename D> __forceinline__ void finish_pieces_t(const float* partial, const int* first, const int* row, D* dst, int width)
{
    int s = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= width) return;
    float acc = 0.f;
    for (int k = first[s]; k < first[s + 1]; k++) acc += partial[(i64)k * width + c];
    D* out = dst + (i64)row[s] * width + c;
    *out = from_f<D>(to_f(*out) + acc);
}
extern "C" __global__ void finish_pieces_bf16(const float* partial, const int* first, const int* row, bf16* dst, int width)
{
    finish_pieces_t(partial, first, row, dst, width);
}
extern "C" __global__ void finish_pieces_f32(const float* partial, const int* first, const int* row, float* dst, int width)
{
    finish_pieces_t(partial, first, row, dst, width);
}
