// A small host emulation of the CUDA execution model, so the kernel sources
// in src/kernels run on the CPU in tests (tests/emulated*.rs) on machines
// without a GPU. Blocks run one after another; the threads of a block run as
// OS threads, with a barrier for __syncthreads and per-warp exchange slots
// for the shuffles. It is for checking what the kernels compute, not how
// fast: correctness of indexing, reductions and arithmetic.
#pragma once

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

using std::max;
using std::min;

struct llorch_uint3 {
    unsigned x, y, z;
};

thread_local llorch_uint3 threadIdx;
thread_local llorch_uint3 blockIdx;
llorch_uint3 blockDim;
llorch_uint3 gridDim;

// Device float4 loads need 16-byte alignment (the backend guarantees it);
// host buffers from Rust are only 4-aligned, so the emulation reads
// unaligned.
struct float4 {
    float x, y, z, w;
};

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
// Dynamic shared memory: one buffer per launch (blocks run one at a time).
static std::vector<unsigned char> llorch_dyn_shared;
#define LLORCH_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(llorch_dyn_shared.data())

static std::unique_ptr<std::barrier<>> llorch_block_bar;
static std::vector<std::unique_ptr<std::barrier<>>> llorch_warp_bars;
static std::vector<uint64_t> llorch_slots;  // one 8-byte slot per thread

static inline void __syncthreads() { llorch_block_bar->arrive_and_wait(); }

static inline unsigned llorch_tid() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

template <typename T>
static inline T __shfl_xor_sync(unsigned, T v, int lane_mask) {
    static_assert(sizeof(T) <= 8, "8-byte values at most");
    unsigned tid = llorch_tid(), warp = tid / 32, lane = tid % 32;
    uint64_t raw = 0;
    std::memcpy(&raw, &v, sizeof(T));
    llorch_slots[tid] = raw;
    llorch_warp_bars[warp]->arrive_and_wait();
    uint64_t other = llorch_slots[warp * 32 + (lane ^ (unsigned)lane_mask)];
    llorch_warp_bars[warp]->arrive_and_wait();
    T out;
    std::memcpy(&out, &other, sizeof(T));
    return out;
}

// Four signed byte products added to `c`.
static inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; i++) {
        c += (int)(signed char)(a >> (8 * i)) * (int)(signed char)(b >> (8 * i));
    }
    return c;
}

// Byte-wise subtraction, each byte modulo 256.
static inline unsigned __vsub4(unsigned a, unsigned b) {
    unsigned r = 0;
    for (int i = 0; i < 4; i++) {
        r |= ((((a >> (8 * i)) & 255u) - ((b >> (8 * i)) & 255u)) & 255u) << (8 * i);
    }
    return r;
}

static inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

static inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}

static inline float h2f(unsigned short h) {
    _Float16 x;
    std::memcpy(&x, &h, 2);
    return (float)x;
}

static inline unsigned short f2h(float f) {
    _Float16 x = (_Float16)f;  // round to nearest even, as cvt.rn.f16.f32
    unsigned short h;
    std::memcpy(&h, &x, 2);
    return h;
}

#define LLORCH_HOST_HALF 1

// Runs a kernel: `body(ctx)` is called on every thread of every block.
extern "C" void llorch_host_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                   unsigned bz, size_t shared_bytes, void (*body)(void*),
                                   void* ctx) {
    // One launch at a time: the emulation's state is global (tests run in
    // parallel threads).
    static std::mutex one_at_a_time;
    std::lock_guard<std::mutex> guard(one_at_a_time);
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
    unsigned nthreads = bx * by * bz;
    llorch_dyn_shared.assign(shared_bytes + 16, 0);
    llorch_slots.assign(((nthreads + 31) / 32) * 32, 0);
    llorch_block_bar = std::make_unique<std::barrier<>>(nthreads);
    llorch_warp_bars.clear();
    for (unsigned w = 0; w * 32 < nthreads; w++) {
        llorch_warp_bars.push_back(
            std::make_unique<std::barrier<>>(std::min(32u, nthreads - w * 32)));
    }
    for (unsigned z = 0; z < gz; z++)
        for (unsigned y = 0; y < gy; y++)
            for (unsigned x = 0; x < gx; x++) {
                std::vector<std::thread> threads;
                threads.reserve(nthreads);
                for (unsigned t = 0; t < nthreads; t++) {
                    threads.emplace_back([=] {
                        blockIdx = {x, y, z};
                        threadIdx = {t % bx, (t / bx) % by, t / (bx * by)};
                        body(ctx);
                    });
                }
                for (auto& th : threads) th.join();
            }
}
