/* bfloat16 <-> float32 for the C kernels (attention.c, norm.c). */
#ifndef SPECDEC_BF16_H
#define SPECDEC_BF16_H

#include <stdint.h>
#include <string.h>

static inline float bf16_load(const uint16_t *p, int64_t i) { /* exact */
    uint32_t u = (uint32_t)p[i] << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t bf16_round(float f) { /* round to nearest even, as torch does */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float f32_load(const float *p, int64_t i) { return p[i]; }

#endif
