// The CUDA weight decoders (src/kernels/dequant.cuh) compiled for the host,
// so tests/decoders.rs can check them on a machine without a GPU. The few
// device intrinsics they use get host definitions here.
//
// Usage: dequant_host TYPE_CODE N < blocks > floats (N values, one row).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define __device__
#define __forceinline__ inline
typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
#define TY_F32 0
#define TY_F16 1
#define TY_BF16 2
#define TY_Q4_0 3
#define TY_Q4_1 4
#define TY_Q5_0 5
#define TY_Q5_1 6
#define TY_Q8_0 7
#define TY_Q4_K 8
#define TY_Q5_K 9
#define TY_Q6_K 10

static float __uint_as_float(u32 u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// IEEE half to float, exact for every finite value, infinities and NaN.
static float h2f(u16 h) {
    u32 sign = (u32)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return __uint_as_float(sign | 0x7f800000 | (man << 13));
    if (exp == 0) {
        if (man == 0) return __uint_as_float(sign);
        float f = (float)man * (1.0f / 16777216.0f);  // man * 2^-24
        return sign ? -f : f;
    }
    return __uint_as_float(sign | ((exp + 112) << 23) | (man << 13));
}

static float ld_h(const u8* p) { return h2f((u16)p[0] | ((u16)p[1] << 8)); }

#include "../../src/kernels/dequant.cuh"

int main(int argc, char** argv) {
    if (argc != 3) return 2;
    int ty = std::atoi(argv[1]);
    long n = std::atol(argv[2]);
    std::vector<u8> in;
    u8 chunk[65536];
    size_t got;
    while ((got = std::fread(chunk, 1, sizeof chunk, stdin)) > 0) in.insert(in.end(), chunk, chunk + got);
    in.resize(in.size() + 256);  // the decoders never read past a row; slack for safety
    std::vector<float> out(n);
    for (long g = 0; g < n / 32; g++) dq32(ty, in.data(), (int)g, &out[g * 32]);
    std::fwrite(out.data(), 4, n, stdout);
    return 0;
}
