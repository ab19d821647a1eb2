// Element-wise algebra on float tensors (gradient blocks, the regression loss, tanh, bias broadcast). Every kernel is
// a grid-stride loop; each element is computed by one thread from its own inputs, so outputs may alias inputs.
#include "common.cuh"

// z = x ⊙ y
extern "C" __global__ void multiply(const float* x, const float* y, float* z, i64 n)
{
    FOR_EACH(i, n) z[i] = x[i] * y[i];
}

// y += alpha·x (one fused rounding; the CPU's MultiplyAdd may or may not fuse, so results agree to 1 ulp)
extern "C" __global__ void add_scaled(const float* x, float alpha, float* y, i64 n)
{
    FOR_EACH(i, n) y[i] = fmaf(x[i], alpha, y[i]);
}

// x ← x·factor
extern "C" __global__ void scale(float* x, float factor, i64 n)
{
    FOR_EACH(i, n) x[i] = x[i] * factor;
}

// y = tanh(x)
extern "C" __global__ void tanh_forward(const float* x, float* y, i64 n)
{
    FOR_EACH(i, n) y[i] = tanhf(x[i]);
}

// dx = dy·(1 − y²), with 1 − y² as (1 − y)(1 + y), accurate where |y| → 1 (as the CPU kernel).
extern "C" __global__ void tanh_backward(const float* y, const float* dy, float* dx, i64 n)
{
    FOR_EACH(i, n)
    {
        float t = y[i];
        dx[i] = dy[i] * __fmul_rn(1.f - t, 1.f + t);
    }
}

// loss = (p − t)², gradient = (2·scale)·(p − t) (gradient may be null).
extern "C" __global__ void squared_error(const float* p, const float* t, float* loss, float* gradient, float twiceScale, i64 n)
{
    FOR_EACH(i, n)
    {
        float diff = p[i] - t[i];
        loss[i] = diff * diff;
        if (gradient) gradient[i] = twiceScale * diff;
    }
}

// y[r, c] = b[c]: seeds a Linear's output with its bias when cuBLASLt has no bias epilogue for a shape.
extern "C" __global__ void broadcast_rows(const float* b, float* y, i64 rows, int width)
{
    FOR_EACH(i, rows * width) y[i] = b[i % width];
}
