// Element-wise algebra (gradient blocks, residual adds, the regression loss, tanh, bias broadcast), on float or bf16
// tensors computed in fp32. Every kernel is a grid-stride loop; each element is computed by one thread from its own
// inputs, so outputs may alias inputs.
#include "common.cuh"

// z = x ⊙ y
template <typename T> __forceinline__ void multiply_t(const T* x, const T* y, T* z, i64 n)
{
    FOR_EACH(i, n) z[i] = from_f<T>(to_f(x[i]) * to_f(y[i]));
}
extern "C" __global__ void multiply(const float* x, const float* y, float* z, i64 n) { multiply_t(x, y, z, n); }
extern "C" __global__ void multiply_bf16(const bf16* x, const bf16* y, bf16* z, i64 n) { multiply_t(x, y, z, n); }

// y += alpha·x (one fused rounding; the CPU's MultiplyAdd may or may not fuse, so results agree to 1 ulp)
template <typename T> __forceinline__ void add_scaled_t(const T* x, float alpha, T* y, i64 n)
{
    FOR_EACH(i, n) y[i] = from_f<T>(fmaf(to_f(x[i]), alpha, to_f(y[i])));
}
extern "C" __global__ void add_scaled(const float* x, float alpha, float* y, i64 n) { add_scaled_t(x, alpha, y, n); }
extern "C" __global__ void add_scaled_bf16(const bf16* x, float alpha, bf16* y, i64 n) { add_scaled_t(x, alpha, y, n); }

// x ← x·factor
extern "C" __global__ void scale(float* x, float factor, i64 n)
{
    FOR_EACH(i, n) x[i] = x[i] * factor;
}

// y = tanh(x)
template <typename T> __forceinline__ void tanh_forward_t(const T* x, T* y, i64 n)
{
    FOR_EACH(i, n) y[i] = from_f<T>(tanhf(to_f(x[i])));
}
extern "C" __global__ void tanh_forward(const float* x, float* y, i64 n) { tanh_forward_t(x, y, n); }
extern "C" __global__ void tanh_forward_bf16(const bf16* x, bf16* y, i64 n) { tanh_forward_t(x, y, n); }

// dx = dy·(1 − y²), with 1 − y² as (1 − y)(1 + y), accurate where |y| → 1 (as the CPU kernel).
template <typename T> __forceinline__ void tanh_backward_t(const T* y, const T* dy, T* dx, i64 n)
{
    FOR_EACH(i, n)
    {
        float t = to_f(y[i]);
        dx[i] = from_f<T>(to_f(dy[i]) * __fmul_rn(1.f - t, 1.f + t));
    }
}
extern "C" __global__ void tanh_backward(const float* y, const float* dy, float* dx, i64 n) { tanh_backward_t(y, dy, dx, n); }
extern "C" __global__ void tanh_backward_bf16(const bf16* y, const bf16* dy, bf16* dx, i64 n) { tanh_backward_t(y, dy, dx, n); }

// loss = (p − t)², gradient = (2·scale)·(p − t) (gradient may be null; float or bf16).
template <typename G> __forceinline__ void squared_error_t(const float* p, const float* t, float* loss, G* gradient, float twiceScale, i64 n)
{
    FOR_EACH(i, n)
    {
        float diff = p[i] - t[i];
        loss[i] = diff * diff;
        if (gradient) gradient[i] = from_f<G>(twiceScale * diff);
    }
}
extern "C" __global__ void squared_error(const float* p, const float* t, float* loss, float* gradient, float twiceScale, i64 n)
{
    squared_error_t(p, t, loss, gradient, twiceScale, n);
}
extern "C" __global__ void squared_error_bf16grad(const float* p, const float* t, float* loss, bf16* gradient, float twiceScale, i64 n)
{
    squared_error_t(p, t, loss, gradient, twiceScale, n);
}

// y[r, c] = b[c]: seeds a Linear's output with its bias when cuBLASLt has no bias epilogue for a shape.
template <typename T> __forceinline__ void broadcast_rows_t(const T* b, T* y, i64 rows, int width)
{
    FOR_EACH(i, rows * width) y[i] = b[i % width];
}
extern "C" __global__ void broadcast_rows(const float* b, float* y, i64 rows, int width) { broadcast_rows_t(b, y, rows, width); }
extern "C" __global__ void broadcast_rows_bf16(const bf16* b, bf16* y, i64 rows, int width) { broadcast_rows_t(b, y, rows, width); }
