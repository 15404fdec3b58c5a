/* RMSNorm of rows (CPU): out = x * rsqrt(mean(x^2) + eps) * w, float32 inside, rounded once.
 *
 * One call per norm replaces the ~8 small ATen kernels F.rms_norm runs on CPU (~12 us per
 * call for one row of 576 in bfloat16 here, 61 calls per decode step). Each row is
 * computed alone with a fixed reduction order (16 lanes, then a fixed tree), so its bits
 * do not depend on how many rows the call holds. x, out: [rows, dim] contiguous; w: [dim].
 */

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16.h"

#define NORM_LANES 16

#define NORM_F32_STORE(x) (x)

#define DEFINE_RMS_NORM(SUFFIX, ELEM, LOAD, STORE)                                              \
    int specdec_rms_norm_##SUFFIX(const ELEM *x, const ELEM *w, ELEM *out, int64_t rows, int dim, \
                                  float eps) {                                                  \
        if (dim <= 0 || rows < 0) return 1;                                                     \
        for (int64_t r = 0; r < rows; r++) {                                                    \
            const ELEM *xr = x + r * dim;                                                       \
            float acc[NORM_LANES] = {0};                                                        \
            int c = 0;                                                                          \
            for (; c + NORM_LANES <= dim; c += NORM_LANES)                                      \
                for (int l = 0; l < NORM_LANES; l++) {                                          \
                    float v = LOAD(xr, c + l);                                                  \
                    acc[l] += v * v;                                                            \
                }                                                                               \
            for (int l = 0; c + l < dim; l++) {                                                 \
                float v = LOAD(xr, c + l);                                                      \
                acc[l] += v * v;                                                                \
            }                                                                                   \
            for (int s = NORM_LANES / 2; s > 0; s /= 2)                                         \
                for (int l = 0; l < s; l++) acc[l] += acc[l + s];                               \
            float scale = 1.0f / sqrtf(acc[0] / (float)dim + eps);                              \
            ELEM *o = out + r * dim;                                                            \
            for (int e = 0; e < dim; e++) o[e] = STORE(LOAD(xr, e) * scale * LOAD(w, e));       \
        }                                                                                       \
        return 0;                                                                               \
    }

DEFINE_RMS_NORM(bf16, uint16_t, bf16_load, bf16_round)
DEFINE_RMS_NORM(f32, float, f32_load, NORM_F32_STORE)
