/* float32 and bfloat16 linear layers for few rows (CPU): out[m, n] = x[m, :] . w[n, :] (+ bias[n]).
 *
 * A decode step multiplies one row, a verify pass K + 1 rows. One row is bound by
 * streaming the weights from memory; from a few rows on, by multiply-adds. oneDNN's float32
 * kernels reach neither bound at these shapes (Zen 4, 2 threads, the default model's
 * matrices: 17 rows take 2x one row where the arithmetic allows ~1.2x), and they compute one
 * row with another reduction order than several, which the engine then has to pad away
 * (models/linear.py).
 *
 * Layout: the weight is packed once into panels of PANEL output columns, k-major inside a
 * panel (packed[p, kk, c] = w[p * PANEL + c, kk], zero past n), so a panel streams as one
 * contiguous run and every k step loads PANEL / 16 whole vectors of it.
 *
 * Every output element is computed by the same steps whatever the call's row count or
 * thread count: a running sum over k = 0, 1, ..., k - 1 in order, one fused multiply-add
 * each, then + bias. So a row's bits do not depend on the other rows: a decode step and a
 * verify pass agree without padding.
 *
 * Work sharing, which changes no result: a tile of up to MAX_ROWS rows x one panel keeps
 * its rows x 3 accumulators in registers (8 x 3 = 24 of the 32 vector registers), so each
 * panel vector loaded serves every row of the tile, and each x element broadcast serves 3
 * vectors. Panels are split over the threads (OpenMP), rows into near-equal tiles.
 * Prefetching keeps the weight stream going while many-row tiles multiply: each tile of a
 * panel prefetches its share of the next panel into L2, spread over its k steps, and reads
 * its own panel PREFETCH_FLOATS ahead into L1. Measured on the 120 matrices of the default
 * model (Intel model 207, 2 threads, benchmarks/linear_layouts.py), rows 9 / 17 against
 * one: 1.38x / 1.76x with the in-panel prefetch alone, 1.19x / 1.37x with both. One row
 * streams as fast without (the hardware prefetcher keeps up), so it does not. The bfloat16
 * tiles do not either: measured there, no gain (the tile unit at one row lost ~10%; the
 * vdpbf16ps tiles are bound by their multiply-adds on that CPU).
 * Layouts: x [m, k] and out [m, n] contiguous; packed from specdec_pack_f32; bias [n] or NULL.
 * bfloat16 (end of file) uses the same panels and tiles, two k's per step (AVX512_BF16).
 */

#include <stdint.h>
#include <string.h>

#define PANEL 48   /* output columns per panel: 3 vectors of 16 */
#define MAX_ROWS 8 /* rows per tile */

int specdec_linear_panel(void) { return PANEL; }

/* 1 where the build has the AVX-512 tiles; the portable loops are correct and invariant but
 * not faster than oneDNN, so the engine uses them only in tests. */
int specdec_linear_vectorized(void) {
#if defined(__AVX512F__)
    return 1;
#else
    return 0;
#endif
}

/* [n, k] -> [ceil(n / PANEL), k, PANEL], zero-padded past n. */
int specdec_pack_f32(const float *w, float *packed, int64_t n, int64_t k, int threads) {
    if (n <= 0 || k <= 0 || threads < 1) return 1;
    int64_t panels = (n + PANEL - 1) / PANEL;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t p = 0; p < panels; p++) {
        float *dst = packed + p * k * PANEL;
        memset(dst, 0, sizeof(float) * k * PANEL);
        for (int c = 0; c < PANEL && p * PANEL + c < n; c++) {
            const float *src = w + (p * PANEL + c) * k;
            for (int64_t kk = 0; kk < k; kk++) dst[kk * PANEL + c] = src[kk];
        }
    }
    return 0;
}

/* Tile t of `tiles` over a panel of `bytes` at `panel` prefetches the t-th share of the panel
 * after it (whole cache lines), where there is one: NULL and 0 where not. */
static inline const char *next_share(const char *panel, int64_t bytes, int has_next, int64_t t, int64_t tiles,
                                     int64_t *share) {
    int64_t each = (bytes / 64 + tiles - 1) / tiles * 64;
    *share = 0;
    if (!has_next || t * each >= bytes) return 0;
    *share = (t + 1) * each > bytes ? bytes - t * each : each;
    return panel + bytes + t * each;
}

#if defined(__AVX512F__)
#include <immintrin.h>

#ifndef PREFETCH_FLOATS
#define PREFETCH_FLOATS (PANEL * 24)
#endif

/* Spread the prefetch of `bytes` at `ahead` (this tile's share of the next panel, from
 * next_share) evenly over a tile's k steps, into L2: while the tiles multiply, the memory
 * keeps streaming. */
#define AHEAD_BEGIN(ahead, bytes, k)                                                           \
    const char *ahead_at = (ahead), *ahead_end = (ahead) ? (ahead) + (bytes) : (ahead);        \
    const int ahead_per_step = (int)(((bytes) / 64 + (k) - 1) / (k));
#define AHEAD_STEP                                                                             \
    for (int l = 0; l < ahead_per_step && ahead_at < ahead_end; l++, ahead_at += 64)           \
        _mm_prefetch(ahead_at, _MM_HINT_T1);

/* ROWS rows of x against one panel; ROWS a constant per instance, so the accumulators stay
 * in registers. cols: the panel's columns that exist (< PANEL only in the last panel). */
#define DEFINE_TILE(ROWS)                                                                      \
    static void tile_##ROWS(const float *x, int64_t k, const float *panel, const float *bias, \
                            float *out, int64_t n_out, int cols, const char *ahead,           \
                            int64_t ahead_bytes) {                                            \
        __m512 acc[ROWS][3];                                                                   \
        for (int r = 0; r < ROWS; r++)                                                         \
            for (int v = 0; v < 3; v++) acc[r][v] = _mm512_setzero_ps();                       \
        AHEAD_BEGIN(ahead, ahead_bytes, k)                                                     \
        for (int64_t kk = 0; kk < k; kk++) {                                                   \
            const float *pk = panel + kk * PANEL;                                              \
            AHEAD_STEP                                                                         \
            _mm_prefetch((const char *)(pk + PREFETCH_FLOATS), _MM_HINT_T0);                   \
            _mm_prefetch((const char *)(pk + PREFETCH_FLOATS + 16), _MM_HINT_T0);              \
            _mm_prefetch((const char *)(pk + PREFETCH_FLOATS + 32), _MM_HINT_T0);              \
            __m512 w0 = _mm512_loadu_ps(pk), w1 = _mm512_loadu_ps(pk + 16),                    \
                   w2 = _mm512_loadu_ps(pk + 32);                                              \
            for (int r = 0; r < ROWS; r++) {                                                   \
                __m512 xb = _mm512_set1_ps(x[r * k + kk]);                                     \
                acc[r][0] = _mm512_fmadd_ps(xb, w0, acc[r][0]);                                \
                acc[r][1] = _mm512_fmadd_ps(xb, w1, acc[r][1]);                                \
                acc[r][2] = _mm512_fmadd_ps(xb, w2, acc[r][2]);                                \
            }                                                                                  \
        }                                                                                      \
        for (int v = 0; v < 3; v++) {                                                          \
            int left = cols - 16 * v;                                                          \
            if (left <= 0) break;                                                              \
            __mmask16 mask = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);   \
            __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + 16 * v) : _mm512_setzero_ps(); \
            for (int r = 0; r < ROWS; r++) {                                                   \
                __m512 s = bias ? _mm512_add_ps(acc[r][v], b) : acc[r][v];                     \
                _mm512_mask_storeu_ps(out + r * n_out + 16 * v, mask, s);                      \
            }                                                                                  \
        }                                                                                      \
    }

#else /* portable: the same steps, element by element */

#define DEFINE_TILE(ROWS)                                                                      \
    static void tile_##ROWS(const float *x, int64_t k, const float *panel, const float *bias, \
                            float *out, int64_t n_out, int cols, const char *ahead,           \
                            int64_t ahead_bytes) {                                            \
        (void)ahead; (void)ahead_bytes;                                                        \
        for (int r = 0; r < ROWS; r++) {                                                       \
            float acc[PANEL] = {0};                                                            \
            for (int64_t kk = 0; kk < k; kk++)                                                 \
                for (int c = 0; c < PANEL; c++)                                                \
                    acc[c] = __builtin_fmaf(x[r * k + kk], panel[kk * PANEL + c], acc[c]);     \
            for (int c = 0; c < cols; c++) out[r * n_out + c] = bias ? acc[c] + bias[c] : acc[c]; \
        }                                                                                      \
    }
#endif

DEFINE_TILE(1)
DEFINE_TILE(2)
DEFINE_TILE(3)
DEFINE_TILE(4)
DEFINE_TILE(5)
DEFINE_TILE(6)
DEFINE_TILE(7)
DEFINE_TILE(8)

typedef void (*tile_fn)(const float *, int64_t, const float *, const float *, float *, int64_t, int,
                        const char *, int64_t);
static const tile_fn TILES[MAX_ROWS] = {tile_1, tile_2, tile_3, tile_4, tile_5, tile_6, tile_7, tile_8};

int specdec_linear_f32(const float *x, const float *packed, const float *bias, float *out, int64_t m,
                       int64_t n, int64_t k, int threads) {
    if (m < 0 || n <= 0 || k <= 0 || threads < 1) return 1;
    int64_t panels = (n + PANEL - 1) / PANEL;
    int64_t tiles = (m + MAX_ROWS - 1) / MAX_ROWS; /* near-equal tiles: 17 rows = 6 + 6 + 5 */
#pragma omp parallel for schedule(static) num_threads(threads) if (panels * m * k > 2048)
    for (int64_t p = 0; p < panels; p++) {
        int cols = n - p * PANEL < PANEL ? (int)(n - p * PANEL) : PANEL;
        const float *panel = packed + p * k * PANEL;
        const float *bp = bias ? bias + p * PANEL : 0;
        int64_t r = 0;
        for (int64_t t = 0; t < tiles; t++) {
            int64_t rows = (m - r) / (tiles - t) + ((m - r) % (tiles - t) != 0);
            int64_t share;
            const char *ahead = next_share((const char *)panel, k * PANEL * (int64_t)sizeof(float), m > 1 && p + 1 < panels,
                                           t, tiles, &share);
            TILES[rows - 1](x + r * k, k, panel, bp, out + r * n + p * PANEL, n, cols, ahead, share);
            r += rows;
        }
    }
    return 0;
}
/* ---- bfloat16: the same panels, pairs of k interleaved, through AVX512_BF16 ----------
 *
 * packed16[p, kk / 2, c, kk % 2] = w[p * PANEL + c, kk] (zero past n and past an odd k): one
 * 512-bit load holds 16 columns x 2 k's, and vdpbf16ps adds both products of a pair to
 * each float32 lane (exact products, then two float32 additions in a fixed order, the
 * instruction's own). Every output: a running float32 sum over the k pairs in order, then
 * + bias, rounded once to bfloat16 (nearest even). Rows and threads change nothing.
 */

int specdec_linear_bf16_vectorized(void) {
#if defined(__AVX512BF16__)
    return 1;
#else
    return 0;
#endif
}

int specdec_pack_bf16(const uint16_t *w, uint16_t *packed, int64_t n, int64_t k, int threads) {
    if (n <= 0 || k <= 0 || threads < 1) return 1;
    int64_t panels = (n + PANEL - 1) / PANEL, pairs = (k + 1) / 2;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t p = 0; p < panels; p++) {
        uint16_t *dst = packed + p * pairs * PANEL * 2;
        memset(dst, 0, sizeof(uint16_t) * pairs * PANEL * 2);
        for (int c = 0; c < PANEL && p * PANEL + c < n; c++) {
            const uint16_t *src = w + (p * PANEL + c) * k;
            for (int64_t kk = 0; kk < k; kk++) dst[(kk / 2) * PANEL * 2 + c * 2 + kk % 2] = src[kk];
        }
    }
    return 0;
}

#if defined(__AVX512BF16__)
/* x's pair (x[2i], x[2i + 1]) of one row as a 32-bit pattern; a missing x[k] (odd k) is 0. */
static inline uint32_t x_pair(const uint16_t *xr, int64_t i, int64_t k) {
    if (2 * i + 1 < k) {
        uint32_t pair;
        memcpy(&pair, xr + 2 * i, sizeof pair); /* little-endian: x[2i] in the low half */
        return pair;
    }
    return xr[2 * i];
}

#define DEFINE_TILE16(ROWS)                                                                    \
    static void tile16_##ROWS(const uint16_t *x, int64_t k, const uint16_t *panel,            \
                              const float *bias, uint16_t *out, int64_t n_out, int cols) {    \
        __m512 acc[ROWS][3];                                                                   \
        for (int r = 0; r < ROWS; r++)                                                         \
            for (int v = 0; v < 3; v++) acc[r][v] = _mm512_setzero_ps();                       \
        int64_t pairs = (k + 1) / 2;                                                           \
        for (int64_t i = 0; i < pairs; i++) {                                                  \
            const uint16_t *pk = panel + i * PANEL * 2;                                        \
            _mm_prefetch((const char *)(pk + PREFETCH_FLOATS * 2), _MM_HINT_T0);               \
            _mm_prefetch((const char *)(pk + PREFETCH_FLOATS * 2 + 32), _MM_HINT_T0);          \
            _mm_prefetch((const char *)(pk + PREFETCH_FLOATS * 2 + 64), _MM_HINT_T0);          \
            __m512bh w0 = (__m512bh)_mm512_loadu_si512(pk), w1 = (__m512bh)_mm512_loadu_si512(pk + 32), \
                     w2 = (__m512bh)_mm512_loadu_si512(pk + 64);                               \
            for (int r = 0; r < ROWS; r++) {                                                   \
                __m512bh xb = (__m512bh)_mm512_set1_epi32((int)x_pair(x + r * k, i, k));       \
                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], xb, w0);                               \
                acc[r][1] = _mm512_dpbf16_ps(acc[r][1], xb, w1);                               \
                acc[r][2] = _mm512_dpbf16_ps(acc[r][2], xb, w2);                               \
            }                                                                                  \
        }                                                                                      \
        for (int v = 0; v < 3; v++) {                                                          \
            int left = cols - 16 * v;                                                          \
            if (left <= 0) break;                                                              \
            __mmask16 mask = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);   \
            __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + 16 * v) : _mm512_setzero_ps(); \
            for (int r = 0; r < ROWS; r++) {                                                   \
                __m512 s = bias ? _mm512_add_ps(acc[r][v], b) : acc[r][v];                     \
                __m256i h = (__m256i)_mm512_cvtneps_pbh(s);                                    \
                _mm256_mask_storeu_epi16(out + r * n_out + 16 * v, mask, h);                   \
            }                                                                                  \
        }                                                                                      \
    }

DEFINE_TILE16(1)
DEFINE_TILE16(2)
DEFINE_TILE16(3)
DEFINE_TILE16(4)
DEFINE_TILE16(5)
DEFINE_TILE16(6)
DEFINE_TILE16(7)
DEFINE_TILE16(8)

typedef void (*tile16_fn)(const uint16_t *, int64_t, const uint16_t *, const float *, uint16_t *, int64_t, int);
static const tile16_fn TILES16[MAX_ROWS] = {tile16_1, tile16_2, tile16_3, tile16_4, tile16_5, tile16_6, tile16_7, tile16_8};
#endif

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
/* ---- bfloat16 through AMX (Sapphire Rapids and later) ------------------------------------
 *
 * The same packed panels feed the tile unit: a pair row of a panel is PANEL x 2 bfloat16 =
 * 192 bytes, so B tiles of 16 pairs x 16 columns sit at byte offsets 0, 64, 128 of 16
 * consecutive pair rows (stride 192), and an A tile is up to 16 rows x 32 k's of x. One
 * TDPBF16PS per 16 columns adds, for every output, the pairs' products to its float32 sum
 * in pair order; rows are computed alone, as in the vector loops, so one row and many rows
 * agree bit for bit. Row blocks: m <= 16 is one block; beyond, ceil(m / 16) equal blocks,
 * the last shifted back to end at row m (its overlap with the one before is computed twice,
 * to the same bits), so one tile shape serves the whole call. k must be a multiple of 32
 * (whole tiles; the default model's 576 and 1536 are); other k take the vector loops, a
 * choice made per matrix, never per row count. Linux grants the tile state on request
 * (arch_prctl, kernel 5.16+); refused, the vector loops run. The product and sum steps are
 * the tile unit's own, not vdpbf16ps's (both flush bfloat16 subnormals), so AMX and
 * non-AMX machines may differ in the last bit, as any two kernels may. */
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static int amx_granted = -1;

static int amx_ready(void) {
    if (amx_granted < 0) amx_granted = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    return amx_granted;
}

struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

static void amx_configure(int rows) { /* tiles 0-2: sums (rows x 16 floats); 3: x; 4-6: weights */
    struct tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 7; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = t < 4 ? (uint8_t)rows : 16;
    }
    _tile_loadconfig(&cfg);
}

static void amx_panel(const uint16_t *x, int64_t k, int rows, const uint16_t *panel, const float *bias,
                      uint16_t *out, int64_t n_out, int cols) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    for (int64_t c = 0; c < k / 32; c++) {
        const uint16_t *pk = panel + c * 16 * PANEL * 2;
        _tile_loadd(3, x + c * 32, k * 2);
        _tile_loadd(4, pk, PANEL * 4);
        _tile_loadd(5, pk + 32, PANEL * 4);
        _tile_loadd(6, pk + 64, PANEL * 4);
        _tile_dpbf16ps(0, 3, 4);
        _tile_dpbf16ps(1, 3, 5);
        _tile_dpbf16ps(2, 3, 6);
    }
    float sums[16][PANEL];
    _tile_stored(0, &sums[0][0], PANEL * 4);
    _tile_stored(1, &sums[0][16], PANEL * 4);
    _tile_stored(2, &sums[0][32], PANEL * 4);
    for (int v = 0; v < 3; v++) {
        int left = cols - 16 * v;
        if (left <= 0) break;
        __mmask16 mask = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + 16 * v) : _mm512_setzero_ps();
        for (int r = 0; r < rows; r++) {
            __m512 s = _mm512_loadu_ps(&sums[r][16 * v]);
            if (bias) s = _mm512_add_ps(s, b);
            _mm256_mask_storeu_epi16(out + r * n_out + 16 * v, mask, (__m256i)_mm512_cvtneps_pbh(s));
        }
    }
}

static void linear_bf16_amx(const uint16_t *x, const uint16_t *packed, const float *bias, uint16_t *out,
                            int64_t m, int64_t n, int64_t k, int threads) {
    int64_t panels = (n + PANEL - 1) / PANEL, pairs = k / 2;
    int64_t blocks = (m + 15) / 16, rows = (m + blocks - 1) / blocks;
#pragma omp parallel num_threads(threads) if (panels * m * k > 2048)
    {
        amx_configure((int)rows);
#pragma omp for schedule(static)
        for (int64_t p = 0; p < panels; p++) {
            int cols = n - p * PANEL < PANEL ? (int)(n - p * PANEL) : PANEL;
            for (int64_t blk = 0; blk < blocks; blk++) {
                int64_t r = blk * rows < m - rows ? blk * rows : m - rows;
                amx_panel(x + r * k, k, (int)rows, packed + p * pairs * PANEL * 2, bias ? bias + p * PANEL : 0,
                          out + r * n + p * PANEL, n, cols);
            }
        }
        _tile_release();
    }
}
#define AMX_BUILT 1
#else
#define AMX_BUILT 0
#endif

/* 1 where bfloat16 linears with k % 32 == 0 run on the tile unit (built, and granted). */
int specdec_linear_bf16_amx(void) {
#if AMX_BUILT
    return amx_ready();
#else
    return 0;
#endif
}

/* bias: float32 [n] or NULL (the bfloat16 bias, widened exactly by the caller). */
int specdec_linear_bf16(const uint16_t *x, const uint16_t *packed, const float *bias, uint16_t *out,
                        int64_t m, int64_t n, int64_t k, int threads) {
#if defined(__AVX512BF16__)
    if (m < 0 || n <= 0 || k <= 0 || threads < 1) return 1;
#if AMX_BUILT
    if (m > 0 && k % 32 == 0 && amx_ready()) {
        linear_bf16_amx(x, packed, bias, out, m, n, k, threads);
        return 0;
    }
#endif
    int64_t panels = (n + PANEL - 1) / PANEL, pairs = (k + 1) / 2;
    int64_t tiles = (m + MAX_ROWS - 1) / MAX_ROWS;
#pragma omp parallel for schedule(static) num_threads(threads) if (panels * m * k > 2048)
    for (int64_t p = 0; p < panels; p++) {
        int cols = n - p * PANEL < PANEL ? (int)(n - p * PANEL) : PANEL;
        const uint16_t *panel = packed + p * pairs * PANEL * 2;
        const float *bp = bias ? bias + p * PANEL : 0;
        int64_t r = 0;
        for (int64_t t = 0; t < tiles; t++) {
            int64_t rows = (m - r) / (tiles - t) + ((m - r) % (tiles - t) != 0);
            TILES16[rows - 1](x + r * k, k, panel, bp, out + r * n + p * PANEL, n, cols);
            r += rows;
        }
    }
    return 0;
#else
    (void)x; (void)packed; (void)bias; (void)out; (void)m; (void)n; (void)k; (void)threads;
    return 2; /* not built: specdec_linear_bf16_vectorized() says so */
#endif
}
