/* The chip-log audit's native fast path (computewatch.formats.chip_audit).
 *
 * scan_entries() walks a run of log lines and accepts each one only while it is an ordinary
 * version 2 snapshot entry (or schedule commit or reveal, below) that the Python LogVerifier
 * would accept with no problem: the exact
 * canonical shape below, chained to the previous line, numbered, timed and triggered as the
 * verifier's state requires, with a region layout the verifier already checked and a shard
 * digest that matches.  It stops at the first line it does not accept; the Python verifier then
 * checks that line (and names any problem).  Accepting is the only thing done here: this file
 * never decides that an entry is bad.
 *
 * SHA-256 (FIPS 180-4) and BLAKE3 (the BLAKE3 paper, section 2) are written here from their
 * specifications: portable C everywhere, and on x86-64 SHA-256 by the SHA extensions and the
 * BLAKE3 compression by SSE4.1 or AVX-512VL, each chosen at import when the CPU has it (only
 * those functions are compiled for those instruction sets).  Without SHA-NI, libcrypto's SHA-256
 * (hashlib's, where the process has already loaded it) is used instead of the portable code.
 * sha256_backend() and blake3_backend() say which are in use; tests force each in turn.
 */
#define _GNU_SOURCE /* memmem */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------- SHA-256 (FIPS 180-4) */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static const uint32_t IV[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const unsigned char *p) {
    uint32_t w[64], a, b, c, d, e, f, g, k, t1, t2;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (i = 16; i < 64; i++) {
        uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; k = h[7];
    for (i = 0; i < 64; i++) {
        t1 = k + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

/* SHA-256 backends.  Each hashes a message given as a prefix of at most 63 bytes (RFC 9162's
   domain byte) followed by the data, so a leaf or node hash never copies its input:
   - "sha-ni": the x86 SHA extensions (chosen when the CPU has them);
   - "libcrypto": hashlib's libcrypto, when this process already loaded it, through its
     low-level SHA256_Init/Update/Final (OpenSSL 3's one-shot SHA256() looks the algorithm up,
     under a lock, on every call);
   - "builtin": the portable code above (every platform; the reference the others are tested
     against). */
enum { SHA_BUILTIN, SHA_LIBCRYPTO, SHA_NI };
static int sha_backend = SHA_BUILTIN;
static int have_shani = 0;

typedef void (*sha256_blocks_fn)(uint32_t h[8], const unsigned char *p, size_t nblocks);

static void sha256_blocks_portable(uint32_t h[8], const unsigned char *p, size_t nblocks) {
    for (; nblocks; nblocks--, p += 64) sha256_block(h, p);
}

/* libcrypto's SHA256_CTX is 112 bytes; this leaves room and alignment to spare. */
typedef union {
    unsigned char bytes[256];
    uint64_t align[32];
} LcCtx;
typedef int (*sha256_init_fn)(LcCtx *);
typedef int (*sha256_update_fn)(LcCtx *, const void *, size_t);
typedef int (*sha256_final_fn)(unsigned char *, LcCtx *);
static sha256_init_fn lc_init = NULL;
static sha256_update_fn lc_update = NULL;
static sha256_final_fn lc_final = NULL;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86_SIMD 1
#include <cpuid.h>
#include <immintrin.h>

#define SHANI __attribute__((target("sha,sse4.1,ssse3")))

/* Four rounds: W[k..k+3] + K[k..k+3], two rounds per SHA256RNDS2 (state as ABEF / CDGH). */
#define SHANI_4(abef, cdgh, w, k)                                                            \
    do {                                                                                     \
        __m128i wk_ = _mm_add_epi32((w), _mm_loadu_si128((const __m128i *)(K256 + (k))));    \
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk_);                                       \
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk_, 0x0E));              \
    } while (0)
/* W[i..i+3] from a = W[i-16..], b = W[i-12..], c = W[i-8..], d = W[i-4..]. */
#define SHANI_NEXT(a, b, c, d) \
    _mm_sha256msg2_epu32(_mm_add_epi32(_mm_sha256msg1_epu32(a, b), _mm_alignr_epi8(d, c, 4)), d)
#define SHANI_LOAD(p, i) _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p) + (i)), bswap)

/* h[0..7] (A..H) to the instructions' ABEF and CDGH registers, and back. */
static inline SHANI void shani_load(const uint32_t h[8], __m128i *abef, __m128i *cdgh) {
    __m128i dcba = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)h), 0xB1);
    __m128i hgfe = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(h + 4)), 0x1B);
    *abef = _mm_alignr_epi8(dcba, hgfe, 8);
    *cdgh = _mm_blend_epi16(hgfe, dcba, 0xF0);
}

static inline SHANI void shani_store(uint32_t h[8], __m128i abef, __m128i cdgh) {
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B), dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)h, _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)(h + 4), _mm_alignr_epi8(dchg, feba, 8));
}

static SHANI void sha256_blocks_shani(uint32_t h[8], const unsigned char *p, size_t nblocks) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i abef, cdgh, abef0, cdgh0, m0, m1, m2, m3;
    int k;
    shani_load(h, &abef, &cdgh);
    for (; nblocks; nblocks--, p += 64) {
        abef0 = abef; cdgh0 = cdgh;
        m0 = SHANI_LOAD(p, 0); m1 = SHANI_LOAD(p, 1); m2 = SHANI_LOAD(p, 2); m3 = SHANI_LOAD(p, 3);
        SHANI_4(abef, cdgh, m0, 0); SHANI_4(abef, cdgh, m1, 4);
        SHANI_4(abef, cdgh, m2, 8); SHANI_4(abef, cdgh, m3, 12);
        for (k = 16; k < 64; k += 16) {
            m0 = SHANI_NEXT(m0, m1, m2, m3); SHANI_4(abef, cdgh, m0, k);
            m1 = SHANI_NEXT(m1, m2, m3, m0); SHANI_4(abef, cdgh, m1, k + 4);
            m2 = SHANI_NEXT(m2, m3, m0, m1); SHANI_4(abef, cdgh, m2, k + 8);
            m3 = SHANI_NEXT(m3, m0, m1, m2); SHANI_4(abef, cdgh, m3, k + 12);
        }
        abef = _mm_add_epi32(abef, abef0); cdgh = _mm_add_epi32(cdgh, cdgh0);
    }
    shani_store(h, abef, cdgh);
}

/* `nblocks` blocks of each of two independent messages, their rounds interleaved: one message's
   rounds depend on each other, so alone they leave the SHA unit idle part of the time. */
static SHANI void sha256_blocks2_shani(uint32_t ha[8], const unsigned char *pa, uint32_t hb[8],
                                       const unsigned char *pb, size_t nblocks) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i a_abef, a_cdgh, a0, a1, a2, a3, b_abef, b_cdgh, b0, b1, b2, b3, sa0, sa1, sb0, sb1;
    int k;
    shani_load(ha, &a_abef, &a_cdgh);
    shani_load(hb, &b_abef, &b_cdgh);
    for (; nblocks; nblocks--, pa += 64, pb += 64) {
        sa0 = a_abef; sa1 = a_cdgh; sb0 = b_abef; sb1 = b_cdgh;
        a0 = SHANI_LOAD(pa, 0); a1 = SHANI_LOAD(pa, 1); a2 = SHANI_LOAD(pa, 2); a3 = SHANI_LOAD(pa, 3);
        b0 = SHANI_LOAD(pb, 0); b1 = SHANI_LOAD(pb, 1); b2 = SHANI_LOAD(pb, 2); b3 = SHANI_LOAD(pb, 3);
        SHANI_4(a_abef, a_cdgh, a0, 0); SHANI_4(b_abef, b_cdgh, b0, 0);
        SHANI_4(a_abef, a_cdgh, a1, 4); SHANI_4(b_abef, b_cdgh, b1, 4);
        SHANI_4(a_abef, a_cdgh, a2, 8); SHANI_4(b_abef, b_cdgh, b2, 8);
        SHANI_4(a_abef, a_cdgh, a3, 12); SHANI_4(b_abef, b_cdgh, b3, 12);
        for (k = 16; k < 64; k += 16) {
            a0 = SHANI_NEXT(a0, a1, a2, a3); b0 = SHANI_NEXT(b0, b1, b2, b3);
            SHANI_4(a_abef, a_cdgh, a0, k); SHANI_4(b_abef, b_cdgh, b0, k);
            a1 = SHANI_NEXT(a1, a2, a3, a0); b1 = SHANI_NEXT(b1, b2, b3, b0);
            SHANI_4(a_abef, a_cdgh, a1, k + 4); SHANI_4(b_abef, b_cdgh, b1, k + 4);
            a2 = SHANI_NEXT(a2, a3, a0, a1); b2 = SHANI_NEXT(b2, b3, b0, b1);
            SHANI_4(a_abef, a_cdgh, a2, k + 8); SHANI_4(b_abef, b_cdgh, b2, k + 8);
            a3 = SHANI_NEXT(a3, a0, a1, a2); b3 = SHANI_NEXT(b3, b0, b1, b2);
            SHANI_4(a_abef, a_cdgh, a3, k + 12); SHANI_4(b_abef, b_cdgh, b3, k + 12);
        }
        a_abef = _mm_add_epi32(a_abef, sa0); a_cdgh = _mm_add_epi32(a_cdgh, sa1);
        b_abef = _mm_add_epi32(b_abef, sb0); b_cdgh = _mm_add_epi32(b_cdgh, sb1);
    }
    shani_store(ha, a_abef, a_cdgh);
    shani_store(hb, b_abef, b_cdgh);
}

static int cpu_has_shani(void) {
    unsigned int a, b, c, d;
    if (!__builtin_cpu_supports("sse4.1") || !__builtin_cpu_supports("ssse3")) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b >> 29) & 1; /* CPUID.(EAX=7,ECX=0):EBX.SHA */
}
#endif

/* A message pre[0..np) || data[0..n): its full blocks are read where they lie (block 0 is
   assembled in `head` when there is a prefix), the last partial block and the padding in `tail`. */
typedef struct {
    const unsigned char *data;
    size_t np, nfull, ntail;
    unsigned char head[64], tail[128];
} ShaMsg;

static void sha_msg(ShaMsg *m, const unsigned char *pre, size_t np, const unsigned char *data, size_t n) {
    size_t len = np + n, rem, i;
    uint64_t bits = (uint64_t)len * 8;
    m->data = data;
    m->np = np;
    m->nfull = len / 64;
    rem = len - 64 * m->nfull;
    m->ntail = rem + 9 <= 64 ? 1 : 2;
    if (m->nfull == 0) {
        if (np) memcpy(m->tail, pre, np);
        if (n) memcpy(m->tail + np, data, n);
    } else {
        if (np) {
            memcpy(m->head, pre, np);
            memcpy(m->head + np, data, 64 - np);
        }
        if (rem) memcpy(m->tail, data + 64 * m->nfull - np, rem);
    }
    m->tail[rem] = 0x80;
    memset(m->tail + rem + 1, 0, 64 * m->ntail - rem - 1 - 8);
    for (i = 0; i < 8; i++) m->tail[64 * m->ntail - 1 - i] = (unsigned char)(bits >> (8 * i));
}

/* Block k of the padded message (k < nfull + ntail). */
static const unsigned char *sha_msg_block(const ShaMsg *m, size_t k) {
    if (k >= m->nfull) return m->tail + 64 * (k - m->nfull);
    return k == 0 && m->np ? m->head : m->data + 64 * k - m->np;
}

static void sha_digest(const uint32_t h[8], unsigned char out[32]) {
    int i;
    for (i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24); out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8); out[4 * i + 3] = (unsigned char)h[i];
    }
}

static void sha_run(sha256_blocks_fn blocks, const ShaMsg *m, unsigned char out[32]) {
    uint32_t h[8];
    size_t k0 = 0;
    memcpy(h, IV, sizeof h);
    if (m->nfull && m->np) {
        blocks(h, m->head, 1);
        k0 = 1;
    }
    if (m->nfull > k0) blocks(h, m->data + 64 * k0 - m->np, m->nfull - k0);
    blocks(h, m->tail, m->ntail);
    sha_digest(h, out);
}

static sha256_blocks_fn sha_blocks(void) {
#ifdef HAVE_X86_SIMD
    if (sha_backend == SHA_NI) return sha256_blocks_shani;
#endif
    return sha256_blocks_portable;
}

/* SHA-256 of pre[0..np) || data[0..n) (np < 64) by the backend in use. */
static void sha256_pre(const unsigned char *pre, size_t np, const unsigned char *data, size_t n, unsigned char out[32]) {
    ShaMsg m;
    if (sha_backend == SHA_LIBCRYPTO) {
        LcCtx ctx;
        lc_init(&ctx);
        if (np) lc_update(&ctx, pre, np);
        lc_update(&ctx, data, n);
        lc_final(out, &ctx);
        return;
    }
    sha_msg(&m, pre, np, data, n);
    sha_run(sha_blocks(), &m, out);
}

static void sha256(const unsigned char *data, size_t n, unsigned char out[32]) { sha256_pre(NULL, 0, data, n, out); }

/* SHA-256 of two messages, pre_a || a and pre_b || b, together: with SHA-NI their blocks go
   through the rounds interleaved (one message's rounds depend on each other, so alone they leave
   the SHA unit idle part of the time). */
static void sha256_pair(const unsigned char *pre_a, size_t npa, const unsigned char *a, size_t na,
                        unsigned char out_a[32], const unsigned char *pre_b, size_t npb, const unsigned char *b,
                        size_t nb, unsigned char out_b[32]) {
#ifdef HAVE_X86_SIMD
    if (sha_backend == SHA_NI) {
        ShaMsg ma, mb;
        uint32_t ha[8], hb[8];
        size_t k, ka, kb, run;
        sha_msg(&ma, pre_a, npa, a, na);
        sha_msg(&mb, pre_b, npb, b, nb);
        ka = ma.nfull + ma.ntail;
        kb = mb.nfull + mb.ntail;
        memcpy(ha, IV, sizeof ha);
        memcpy(hb, IV, sizeof hb);
        k = 0;
        if (ma.nfull && mb.nfull && (ma.np || mb.np)) { /* block 0 (an assembled head on either side) */
            sha256_blocks2_shani(ha, sha_msg_block(&ma, 0), hb, sha_msg_block(&mb, 0), 1);
            k = 1;
        }
        /* Then the blocks both messages have in place: one run each, contiguous in its data. */
        run = (ma.nfull < mb.nfull ? ma.nfull : mb.nfull) - k;
        if (run > 0) {
            sha256_blocks2_shani(ha, sha_msg_block(&ma, k), hb, sha_msg_block(&mb, k), run);
            k += run;
        }
        for (; k < ka && k < kb; k++) sha256_blocks2_shani(ha, sha_msg_block(&ma, k), hb, sha_msg_block(&mb, k), 1);
        for (; k < ka; k++) sha256_blocks_shani(ha, sha_msg_block(&ma, k), 1);
        for (; k < kb; k++) sha256_blocks_shani(hb, sha_msg_block(&mb, k), 1);
        sha_digest(ha, out_a);
        sha_digest(hb, out_b);
        return;
    }
#endif
    sha256_pre(pre_a, npa, a, na, out_a);
    sha256_pre(pre_b, npb, b, nb, out_b);
}

/* ---------------------------------------------------------------- BLAKE3 (hash mode, 32 bytes) */

enum { CHUNK_START = 1, CHUNK_END = 2, PARENT = 4, ROOT = 8, KEYED_HASH = 16 };
static const int MSG_PERM[16] = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};

#define ROTR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define G(a, b, c, d, mx, my)                                   \
    do {                                                        \
        s[a] = s[a] + s[b] + (mx); s[d] = ROTR32(s[d] ^ s[a], 16); \
        s[c] = s[c] + s[d]; s[b] = ROTR32(s[b] ^ s[c], 12);      \
        s[a] = s[a] + s[b] + (my); s[d] = ROTR32(s[d] ^ s[a], 8);  \
        s[c] = s[c] + s[d]; s[b] = ROTR32(s[b] ^ s[c], 7);       \
    } while (0)

/* Round r reads message word SIGMA[r][i] of the original block (MSG_PERM applied r times). */
static unsigned char SIGMA[7][16];
#ifdef HAVE_X86_SIMD
/* The SIMD compressions take each round's message words in the order the vector G uses them:
   the columns' first and second words, then the diagonals' (B3ORDER[r][j] = SIGMA[r][B3ORD[j]]),
   diagonals 3, 0, 1, 2 in lanes 0-3 (see B3_DIAG). */
static const int B3ORD[16] = {0, 2, 4, 6, 1, 3, 5, 7, 14, 8, 10, 12, 15, 9, 11, 13};
static int32_t B3ORDER[7][16];
#endif

static void b3_init_sigma(void) {
    int r, i;
    for (i = 0; i < 16; i++) SIGMA[0][i] = (unsigned char)i;
    for (r = 1; r < 7; r++)
        for (i = 0; i < 16; i++) SIGMA[r][i] = SIGMA[r - 1][MSG_PERM[i]];
#ifdef HAVE_X86_SIMD
    for (r = 0; r < 7; r++)
        for (i = 0; i < 16; i++) B3ORDER[r][i] = SIGMA[r][B3ORD[i]];
#endif
}

/* The compression function; out16 (when not NULL) gets all 16 output words (the XOF's). out may
   be cv. */
static void b3_compress_portable(const uint32_t cv[8], const unsigned char block[64], uint32_t len, uint64_t counter,
                             uint32_t flags, uint32_t out[8], uint32_t out16[16]) {
    uint32_t m[16], s[16];
    int i, r;
    for (i = 0; i < 16; i++)
        m[i] = (uint32_t)block[4 * i] | (uint32_t)block[4 * i + 1] << 8 | (uint32_t)block[4 * i + 2] << 16 |
               (uint32_t)block[4 * i + 3] << 24;
    for (i = 0; i < 8; i++) s[i] = cv[i];
    s[8] = IV[0]; s[9] = IV[1]; s[10] = IV[2]; s[11] = IV[3];
    s[12] = (uint32_t)counter; s[13] = (uint32_t)(counter >> 32); s[14] = len; s[15] = flags;
    for (r = 0; r < 7; r++) {
        const unsigned char *x = SIGMA[r];
        G(0, 4, 8, 12, m[x[0]], m[x[1]]); G(1, 5, 9, 13, m[x[2]], m[x[3]]);
        G(2, 6, 10, 14, m[x[4]], m[x[5]]); G(3, 7, 11, 15, m[x[6]], m[x[7]]);
        G(0, 5, 10, 15, m[x[8]], m[x[9]]); G(1, 6, 11, 12, m[x[10]], m[x[11]]);
        G(2, 7, 8, 13, m[x[12]], m[x[13]]); G(3, 4, 9, 14, m[x[14]], m[x[15]]);
    }
    if (out16)
        for (i = 0; i < 8; i++) out16[i + 8] = s[i + 8] ^ cv[i];
    for (i = 0; i < 8; i++) s[i] ^= s[i + 8];
    if (out16) memcpy(out16, s, 8 * sizeof(uint32_t));
    if (out) memcpy(out, s, 8 * sizeof(uint32_t));
}

/* The compression function by SIMD: the state's four rows in four registers, G on all four
   columns at once, then on the diagonals after rotating rows 1-3 by 1, 2 and 3 words. */
#ifdef HAVE_X86_SIMD

/* Half a round (G on four columns or four diagonals).  The message word is added to r0 before
   r1, and kept apart (an empty asm the compiler cannot see through, or it reassociates the sum),
   so that only one add waits for r1, the end of the previous step's dependency chain. */
#define B3_ADD3(r0, m, r1)                         \
    do {                                           \
        __m128i t_ = _mm_add_epi32(r0, m);         \
        __asm__("" : "+x"(t_));                    \
        r0 = _mm_add_epi32(t_, r1);                \
    } while (0)
#define B3_HALF(r0, r1, r2, r3, mx, my, ROT16, ROT12, ROT8, ROT7)      \
    do {                                                               \
        B3_ADD3(r0, mx, r1);                                           \
        r3 = ROT16(_mm_xor_si128(r3, r0));                             \
        r2 = _mm_add_epi32(r2, r3);                                    \
        r1 = ROT12(_mm_xor_si128(r1, r2));                             \
        B3_ADD3(r0, my, r1);                                           \
        r3 = ROT8(_mm_xor_si128(r3, r0));                              \
        r2 = _mm_add_epi32(r2, r3);                                    \
        r1 = ROT7(_mm_xor_si128(r1, r2));                              \
    } while (0)
/* The diagonals into columns: lane i then holds s[4 + i] of row 1 with the words of its
   diagonal, rows 0, 2 and 3 rotated so that row 1, the last row each half-round writes, needs
   no shuffle before the next one (the diagonal half's message words come in the same lanes). */
#define B3_DIAG(r0, r2, r3)                  \
    do {                                     \
        r0 = _mm_shuffle_epi32(r0, 0x93);    \
        r2 = _mm_shuffle_epi32(r2, 0x39);    \
        r3 = _mm_shuffle_epi32(r3, 0x4E);    \
    } while (0)
#define B3_UNDIAG(r0, r2, r3)                \
    do {                                     \
        r0 = _mm_shuffle_epi32(r0, 0x39);    \
        r2 = _mm_shuffle_epi32(r2, 0x93);    \
        r3 = _mm_shuffle_epi32(r3, 0x4E);    \
    } while (0)
#define B3_FINISH()                                                                          \
    do {                                                                                     \
        __m128i c0 = _mm_loadu_si128((const __m128i *)cv), c1 = _mm_loadu_si128((const __m128i *)(cv + 4)); \
        if (out16) {                                                                         \
            _mm_storeu_si128((__m128i *)(out16 + 8), _mm_xor_si128(r2, c0));                 \
            _mm_storeu_si128((__m128i *)(out16 + 12), _mm_xor_si128(r3, c1));                \
        }                                                                                    \
        r0 = _mm_xor_si128(r0, r2);                                                          \
        r1 = _mm_xor_si128(r1, r3);                                                          \
        if (out16) {                                                                         \
            _mm_storeu_si128((__m128i *)out16, r0);                                          \
            _mm_storeu_si128((__m128i *)(out16 + 4), r1);                                    \
        }                                                                                    \
        if (out) {                                                                           \
            _mm_storeu_si128((__m128i *)out, r0);                                            \
            _mm_storeu_si128((__m128i *)(out + 4), r1);                                      \
        }                                                                                    \
    } while (0)

#define SSE41 __attribute__((target("sse4.1,ssse3")))
#define S_ROT16(x) _mm_shuffle_epi8(x, rot16)
#define S_ROT8(x) _mm_shuffle_epi8(x, rot8)
#define S_ROT12(x) _mm_or_si128(_mm_srli_epi32(x, 12), _mm_slli_epi32(x, 20))
#define S_ROT7(x) _mm_or_si128(_mm_srli_epi32(x, 7), _mm_slli_epi32(x, 25))

/* SSE4.1: the message words of each round gathered from memory in B3ORDER's order. */
static SSE41 void b3_compress_sse41(const uint32_t cv[8], const unsigned char block[64], uint32_t len,
                                    uint64_t counter, uint32_t flags, uint32_t out[8], uint32_t out16[16]) {
    const __m128i rot16 = _mm_set_epi8(13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2);
    const __m128i rot8 = _mm_set_epi8(12, 15, 14, 13, 8, 11, 10, 9, 4, 7, 6, 5, 0, 3, 2, 1);
    uint32_t m[16];
    __m128i r0, r1, r2, r3;
    int r;
    memcpy(m, block, 64); /* x86 is little-endian: the block's words as they lie */
    r0 = _mm_loadu_si128((const __m128i *)cv);
    r1 = _mm_loadu_si128((const __m128i *)(cv + 4));
    r2 = _mm_loadu_si128((const __m128i *)IV);
    r3 = _mm_set_epi32((int)flags, (int)len, (int)(uint32_t)(counter >> 32), (int)(uint32_t)counter);
    for (r = 0; r < 7; r++) {
        const int32_t *o = B3ORDER[r];
        __m128i mx = _mm_set_epi32((int)m[o[3]], (int)m[o[2]], (int)m[o[1]], (int)m[o[0]]);
        __m128i my = _mm_set_epi32((int)m[o[7]], (int)m[o[6]], (int)m[o[5]], (int)m[o[4]]);
        B3_HALF(r0, r1, r2, r3, mx, my, S_ROT16, S_ROT12, S_ROT8, S_ROT7);
        B3_DIAG(r0, r2, r3);
        mx = _mm_set_epi32((int)m[o[11]], (int)m[o[10]], (int)m[o[9]], (int)m[o[8]]);
        my = _mm_set_epi32((int)m[o[15]], (int)m[o[14]], (int)m[o[13]], (int)m[o[12]]);
        B3_HALF(r0, r1, r2, r3, mx, my, S_ROT16, S_ROT12, S_ROT8, S_ROT7);
        B3_UNDIAG(r0, r2, r3);
    }
    B3_FINISH();
}

#define AVX512 __attribute__((target("avx2,avx512f,avx512vl,sse4.1,ssse3")))
#define V_ROT16(x) _mm_ror_epi32(x, 16)
#define V_ROT12(x) _mm_ror_epi32(x, 12)
#define V_ROT8(x) _mm_ror_epi32(x, 8)
#define V_ROT7(x) _mm_ror_epi32(x, 7)

/* AVX-512VL: one-instruction rotations, and each round's message words permuted into place from
   the whole block by two two-source permutes (256-bit registers only). */
static AVX512 void b3_compress_avx512(const uint32_t cv[8], const unsigned char block[64], uint32_t len,
                                      uint64_t counter, uint32_t flags, uint32_t out[8], uint32_t out16[16]) {
    const __m256i lo = _mm256_loadu_si256((const __m256i *)block), hi = _mm256_loadu_si256((const __m256i *)(block + 32));
    __m128i r0, r1, r2, r3;
    int r;
    r0 = _mm_loadu_si128((const __m128i *)cv);
    r1 = _mm_loadu_si128((const __m128i *)(cv + 4));
    r2 = _mm_loadu_si128((const __m128i *)IV);
    r3 = _mm_set_epi32((int)flags, (int)len, (int)(uint32_t)(counter >> 32), (int)(uint32_t)counter);
    for (r = 0; r < 7; r++) {
        __m256i cols = _mm256_permutex2var_epi32(lo, _mm256_loadu_si256((const __m256i *)B3ORDER[r]), hi);
        __m256i diag = _mm256_permutex2var_epi32(lo, _mm256_loadu_si256((const __m256i *)(B3ORDER[r] + 8)), hi);
        B3_HALF(r0, r1, r2, r3, _mm256_castsi256_si128(cols), _mm256_extracti128_si256(cols, 1), V_ROT16, V_ROT12,
                V_ROT8, V_ROT7);
        B3_DIAG(r0, r2, r3);
        B3_HALF(r0, r1, r2, r3, _mm256_castsi256_si128(diag), _mm256_extracti128_si256(diag, 1), V_ROT16, V_ROT12,
                V_ROT8, V_ROT7);
        B3_UNDIAG(r0, r2, r3);
    }
    B3_FINISH();
}
#endif

typedef void (*b3_compress_fn)(const uint32_t cv[8], const unsigned char block[64], uint32_t len, uint64_t counter,
                               uint32_t flags, uint32_t out[8], uint32_t out16[16]);
/* The compression function in use (the best this CPU runs; set_blake3_backend for tests). */
static b3_compress_fn b3_compress_full = b3_compress_portable;

static void b3_compress(const uint32_t cv[8], const unsigned char block[64], uint32_t len, uint64_t counter,
                        uint32_t flags, uint32_t out[8]) {
    b3_compress_full(cv, block, len, counter, flags, out, NULL);
}

static void b3_parent(const uint32_t l[8], const uint32_t r[8], int root, uint32_t out[8]) {
    unsigned char block[64];
    int i;
    for (i = 0; i < 8; i++) {
        uint32_t a = l[i], b = r[i];
        block[4 * i] = (unsigned char)a; block[4 * i + 1] = (unsigned char)(a >> 8);
        block[4 * i + 2] = (unsigned char)(a >> 16); block[4 * i + 3] = (unsigned char)(a >> 24);
        block[32 + 4 * i] = (unsigned char)b; block[32 + 4 * i + 1] = (unsigned char)(b >> 8);
        block[32 + 4 * i + 2] = (unsigned char)(b >> 16); block[32 + 4 * i + 3] = (unsigned char)(b >> 24);
    }
    b3_compress(IV, block, 64, 0, PARENT | (root ? ROOT : 0), out);
}

/* An incremental hasher (hash mode), so a message can be given in pieces (a shard document is
   its fixed head, the line's regions and its fixed tail) without being copied together.  A block
   is compressed only once more input shows it is not the last (the last one is flagged). */
typedef struct {
    uint32_t cv[8];          /* the current chunk's chaining value */
    uint32_t stack[54][8];   /* finished subtrees, as in the paper's incremental tree */
    unsigned char block[64]; /* the block not yet compressed */
    size_t blen;             /* bytes in it */
    int blocks;              /* blocks of the current chunk already compressed */
    int depth;
    uint64_t chunk;          /* the current chunk's index */
} B3;

static void b3_init(B3 *h) {
    memcpy(h->cv, IV, sizeof h->cv);
    h->blen = 0;
    h->blocks = 0;
    h->depth = 0;
    h->chunk = 0;
}

/* The current chunk is complete and more input follows: its chaining value joins the stack,
   merged with one subtree per trailing zero bit of the number of chunks so far. */
static void b3_end_chunk(B3 *h) {
    uint32_t cv[8];
    uint64_t total = h->chunk + 1;
    b3_compress(h->cv, h->block, 64, h->chunk, CHUNK_END | (h->blocks == 0 ? CHUNK_START : 0), cv);
    while ((total & 1) == 0) {
        b3_parent(h->stack[--h->depth], cv, 0, cv);
        total >>= 1;
    }
    memcpy(h->stack[h->depth++], cv, sizeof cv);
    memcpy(h->cv, IV, sizeof h->cv);
    h->chunk++;
    h->blocks = 0;
    h->blen = 0;
}

static void b3_update(B3 *h, const unsigned char *p, size_t n) {
    while (n > 0) {
        size_t take;
        if (h->blen == 64) { /* more input: the buffered block is not the last */
            if (h->blocks == 15) {
                b3_end_chunk(h);
            } else {
                b3_compress(h->cv, h->block, 64, h->chunk, h->blocks == 0 ? CHUNK_START : 0, h->cv);
                h->blocks++;
                h->blen = 0;
            }
        }
        /* Whole blocks that are neither a chunk's last nor the input's are compressed in place. */
        while (h->blen == 0 && n > 64 && h->blocks < 15) {
            b3_compress(h->cv, p, 64, h->chunk, h->blocks == 0 ? CHUNK_START : 0, h->cv);
            h->blocks++;
            p += 64;
            n -= 64;
        }
        take = 64 - h->blen < n ? 64 - h->blen : n;
        memcpy(h->block + h->blen, p, take);
        h->blen += take;
        p += take;
        n -= take;
    }
}

static void b3_final(B3 *h, unsigned char out[32]) {
    uint32_t cv[8];
    int i, root = h->chunk == 0;
    memset(h->block + h->blen, 0, 64 - h->blen);
    b3_compress(h->cv, h->block, (uint32_t)h->blen, h->chunk,
                CHUNK_END | (h->blocks == 0 ? CHUNK_START : 0) | (root ? ROOT : 0), cv);
    while (h->depth > 0) {
        h->depth--;
        b3_parent(h->stack[h->depth], cv, h->depth == 0, cv);
    }
    for (i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)cv[i]; out[4 * i + 1] = (unsigned char)(cv[i] >> 8);
        out[4 * i + 2] = (unsigned char)(cv[i] >> 16); out[4 * i + 3] = (unsigned char)(cv[i] >> 24);
    }
}

/* ---------------------------------------------------------------- a strict canonical reader */

typedef struct {
    const char *p, *end;
    int clean; /* every byte of the input is printable ASCII and none is a backslash (checked once) */
} Cur;

/* 1 when every byte is printable ASCII (0x20-0x7e) and none is a backslash: every byte of an
   entry this reader accepts is (each lies in a literal, a number, hex or an unescaped string). */
static int clean_ascii(const char *p, Py_ssize_t n) {
    unsigned char bad = 0;
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        bad |= (unsigned char)((unsigned char)(ch - 0x20) > 0x5e) | (unsigned char)(ch == '\\');
    }
    return !bad;
}

static unsigned char HEXOK[256]; /* 1 for 0-9 and a-f */

/* p[0..n) == s[0..n): 8, 4 and 1 bytes at a time, all ORed together (no call, no branch per
   byte; a literal's loads fold into constants where n is known when compiling). */
static inline __attribute__((always_inline)) int same_n(const char *p, const char *s, size_t n) {
    uint64_t diff = 0, a, b;
    uint32_t a4, b4;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&a, p + i, 8);
        memcpy(&b, s + i, 8);
        diff |= a ^ b;
    }
    if (i + 4 <= n) {
        memcpy(&a4, p + i, 4);
        memcpy(&b4, s + i, 4);
        diff |= a4 ^ b4;
        i += 4;
    }
    for (; i < n; i++) diff |= (unsigned char)(p[i] ^ s[i]);
    return diff == 0;
}

static inline __attribute__((always_inline)) int lit_n(Cur *c, const char *s, size_t n) {
    if ((size_t)(c->end - c->p) < n || !same_n(c->p, s, n)) return 0;
    c->p += n;
    return 1;
}

/* A literal string's length is known when compiling. */
#define lit(c, s) lit_n((c), (s), sizeof(s) - 1)

/* 0 or [1-9][0-9]{0,maxd-1}: a JSON integer (or the digits of a decimal string) that is
   canonical and fits in int64. */
static int digits(Cur *c, int maxd, int64_t *out) {
    const char *s = c->p;
    int64_t v = 0;
    if (s >= c->end || *s < '0' || *s > '9') return 0;
    if (*s == '0') {
        c->p = s + 1;
        *out = 0;
        return 1;
    }
    while (s < c->end && *s >= '0' && *s <= '9') {
        if (s - c->p >= maxd) return 0;
        v = v * 10 + (*s - '0');
        s++;
    }
    c->p = s;
    *out = v;
    return 1;
}

/* Integers of at most 15 digits are below 2**53 (Python's fast parse takes them as they are);
   decimal strings of at most 18 digits fit in int64. */
static int json_int(Cur *c, int64_t *out) { return digits(c, 15, out); }

static int dec_string(Cur *c, int64_t *out) {
    return lit(c, "\"") && digits(c, 18, out) && lit(c, "\"");
}

/* A string of printable ASCII with nothing to escape: its canonical form is itself. */
static int plain_string(Cur *c, const char **s, Py_ssize_t *n) {
    const char *q, *r;
    if (c->p >= c->end || *c->p != '"') return 0;
    q = memchr(c->p + 1, '"', (size_t)(c->end - c->p - 1));
    if (!q) return 0;
    if (!c->clean)
        for (r = c->p + 1; r < q; r++)
            if (*r < 0x20 || *r > 0x7e || *r == '\\') return 0;
    if (s) *s = c->p + 1;
    if (n) *n = q - c->p - 1;
    c->p = q + 1;
    return 1;
}

static int is_hex64(const char *p);

static int hex64(Cur *c, const char **s) {
    if (c->end - c->p < 66 || c->p[0] != '"' || c->p[65] != '"' || !is_hex64(c->p + 1)) return 0;
    if (s) *s = c->p + 1;
    c->p += 66;
    return 1;
}

/* Any value in canonical form with no float, no negative number, no escape and object keys in
   strictly increasing order (bytewise, which is RFC 8785's order for ASCII keys). */
static int value(Cur *c, int depth) {
    int64_t ignored;
    if (depth > 16 || c->p >= c->end) return 0;
    switch (*c->p) {
    case '"':
        return plain_string(c, NULL, NULL);
    case '{': {
        const char *prev = NULL;
        Py_ssize_t prevn = 0;
        c->p++;
        if (lit(c, "}")) return 1;
        for (;;) {
            const char *k;
            Py_ssize_t kn;
            if (!plain_string(c, &k, &kn)) return 0;
            if (prev) {
                Py_ssize_t m = kn < prevn ? kn : prevn;
                int cmp = memcmp(prev, k, (size_t)m);
                if (cmp > 0 || (cmp == 0 && prevn >= kn)) return 0;
            }
            prev = k; prevn = kn;
            if (!lit(c, ":") || !value(c, depth + 1)) return 0;
            if (lit(c, "}")) return 1;
            if (!lit(c, ",")) return 0;
        }
    }
    case '[':
        c->p++;
        if (lit(c, "]")) return 1;
        for (;;) {
            if (!value(c, depth + 1)) return 0;
            if (lit(c, "]")) return 1;
            if (!lit(c, ",")) return 0;
        }
    case 't':
        return lit(c, "true");
    case 'f':
        return lit(c, "false");
    case 'n':
        return lit(c, "null");
    default:
        return json_int(c, &ignored) && (c->p >= c->end || (*c->p != '.' && *c->p != 'e' && *c->p != 'E'));
    }
}

/* The first `],"shard_digest":"` in [p, end), or NULL: each `]` compared in place (a snapshot's
   regions hold a few, one per shape; cheaper than memmem's setup for each line). */
static const char *find_regions_end(const char *p, const char *end) {
    static const char needle[] = "],\"shard_digest\":\"";
    const size_t k = sizeof(needle) - 1;
    while ((p = memchr(p, ']', (size_t)(end - p))) != NULL) {
        if ((size_t)(end - p) >= k && same_n(p, needle, k)) return p;
        p++;
    }
    return NULL;
}

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* 1 when p[0..64) are lowercase hex digits (a snapshot's layout drops three of these per line). */
static int is_hex64(const char *p) {
#if defined(__SSE2__)
    /* Byte by byte, unsigned: b - '0' <= 9 or b - 'a' <= 5 (a saturated subtraction is zero). */
    const __m128i zero = _mm_setzero_si128(), d0 = _mm_set1_epi8('0'), a0 = _mm_set1_epi8('a');
    const __m128i nine = _mm_set1_epi8(9), five = _mm_set1_epi8(5);
    int i, mask = 0xffff;
    for (i = 0; i < 64; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i digit = _mm_cmpeq_epi8(_mm_subs_epu8(_mm_sub_epi8(v, d0), nine), zero);
        __m128i lower = _mm_cmpeq_epi8(_mm_subs_epu8(_mm_sub_epi8(v, a0), five), zero);
        mask &= _mm_movemask_epi8(_mm_or_si128(digit, lower));
    }
    return mask == 0xffff;
#else
    int i;
    unsigned char ok = 1;
    for (i = 0; i < 64; i++) ok &= HEXOK[(unsigned char)p[i]];
    return ok;
#endif
}

static void to_hex(const unsigned char *d, char *out) {
    static const char *hx = "0123456789abcdef";
    int i;
    for (i = 0; i < 32; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
}

/* ---------------------------------------------------------------- snapshot lines */

#define SHARD_HEAD "{\"hash\":\"blake3-256\",\"regions\":"
#define SHARD_TAIL ",\"v\":1}"
#define MAX_TRIGGERS 16

/* What one line says, when it has the exact shape of an ordinary version 2 snapshot entry whose
   shard digest matches its regions (ok = 1); read from the line alone, so lines are read in
   parallel (prescan) before the verifier's state decides, in log order, whether it fits. */
typedef struct {
    int ok, ntrig;
    int64_t epoch, lo, boot, busy, clock, counter;
    int64_t trig[MAX_TRIGGERS];
    unsigned char prev[32];
    Py_ssize_t regions, regions_end, serial, serial_n; /* offsets into the line */
} Snap;

typedef struct {
    char *p;
    size_t cap;
} Buf;

static int buf_reserve(Buf *b, size_t need) {
    if (need <= b->cap) return 1;
    char *nb = realloc(b->p, need);
    if (!nb) return 0;
    b->p = nb;
    b->cap = need;
    return 1;
}

/* 32 bytes from 64 lowercase hex digits (checked by the reader): a digit's value is its low
   nibble, plus 9 for a-f (bit 6 set), with no branch; built in a local array (a store through
   `out` could alias the input and would force a reload per byte). */
static inline void unhex32(const char *hex, unsigned char out[32]) {
    const unsigned char *h = (const unsigned char *)hex;
    unsigned char tmp[32];
    int k;
    for (k = 0; k < 32; k++) {
        unsigned a = h[2 * k], b = h[2 * k + 1];
        tmp[k] = (unsigned char)((((a & 15) + 9 * (a >> 6)) << 4) | ((b & 15) + 9 * (b >> 6)));
    }
    memcpy(out, tmp, 32);
}

/* Fills `s` (s->ok = 1) when the line is a well-formed snapshot entry by this reader's strict
   shape and its shard digest matches; 0 otherwise (then the Python verifier reads it).  No
   Python API: runs without the GIL.  Returns -1 only when out of memory. */
static int snapshot_shape(const char *line, Py_ssize_t n, Snap *s, const char **digest_out);
static void shard_doc_digest(const char *regions, size_t rn, unsigned char d[32]);

/* 1 when the shard digest's 64 hex digits are `d`'s. */
static int digest_is(const char *digest, const unsigned char d[32]) {
    char hexbuf[64];
    to_hex(d, hexbuf);
    return memcmp(hexbuf, digest, 64) == 0;
}

static int parse_snapshot(const char *line, Py_ssize_t n, Snap *s, Buf *scratch) {
    const char *digest;
    unsigned char d[32];
    if (!snapshot_shape(line, n, s, &digest)) return 0;
    shard_doc_digest(line + s->regions, (size_t)(s->regions_end - s->regions), d);
    s->ok = digest_is(digest, d);
    return s->ok;
}

/* The shard document's BLAKE3, SHARD_HEAD || regions || SHARD_TAIL, hashed in place. */
static void shard_doc_digest(const char *regions, size_t rn, unsigned char d[32]) {
    B3 h;
    b3_init(&h);
    b3_update(&h, (const unsigned char *)SHARD_HEAD, sizeof(SHARD_HEAD) - 1);
    b3_update(&h, (const unsigned char *)regions, rn);
    b3_update(&h, (const unsigned char *)SHARD_TAIL, sizeof(SHARD_TAIL) - 1);
    b3_final(&h, d);
}

/* The shard document of `regions` laid out in `doc` (one BLAKE3 chunk, 1024 bytes), zero-padded to
   a whole number of 64-byte blocks: its length, or 0 when it does not fit one chunk. */
static size_t shard_doc_lay(unsigned char doc[1024], const char *regions, size_t rn) {
    size_t hn = sizeof(SHARD_HEAD) - 1, tn = sizeof(SHARD_TAIL) - 1, len;
    if (rn > 1024 - hn - tn) return 0;
    len = hn + rn + tn;
    memcpy(doc, SHARD_HEAD, hn);
    memcpy(doc + hn, regions, rn);
    memcpy(doc + hn + rn, SHARD_TAIL, tn);
    memset(doc + len, 0, 64 * ((len + 63) / 64) - len);
    return len;
}

/* Everything parse_snapshot checks but the shard digest: 1 with `s` filled (s->ok still 0) and
   *digest_out at the line's 64 hex digits of it, else 0. */
static int snapshot_shape(const char *line, Py_ssize_t n, Snap *s, const char **digest_out) {
    Cur c = {line, line + n, 1};
    int64_t step;
    const char *digest, *prevhex, *ser, *cut, *cut_end, *regions, *regions_end;
    Py_ssize_t sern;
    int i, j;

    s->ok = 0;
    s->ntrig = 0;
    if (!lit(&c, "{\"body\":{\"copy_out\":") || !clean_ascii(line, n)) return 0;
    if (!plain_string(&c, NULL, NULL)) return 0;  /* the copy-out file name (a string; anything else goes to Python) */
    if (!lit(&c, ",\"epoch\":") || !json_int(&c, &s->epoch)) return 0;
    if (!lit(&c, ",\"hash\":\"blake3-256\",\"regions\":")) return 0;
    regions = c.p;
    if (c.p >= c.end || *c.p != '[' || !value(&c, 1)) return 0;
    regions_end = c.p;
    if (!lit(&c, ",\"shard_digest\":") || !hex64(&c, &digest)) return 0;
    if (!lit(&c, ",\"step\":") || !json_int(&c, &step)) return 0;
    if (!lit(&c, ",\"step_start_busy_ns\":") || !dec_string(&c, &s->lo)) return 0;
    if (!lit(&c, ",\"triggers\":[")) return 0;
    do {
        if (s->ntrig == MAX_TRIGGERS || !dec_string(&c, &s->trig[s->ntrig++])) return 0;
    } while (lit(&c, ","));
    if (!lit(&c, "]},\"boot\":") || !json_int(&c, &s->boot)) return 0;
    if (!lit(&c, ",\"busy_ns\":") || !dec_string(&c, &s->busy)) return 0;
    if (!lit(&c, ",\"clock_ns\":") || !dec_string(&c, &s->clock)) return 0;
    if (!lit(&c, ",\"counter\":") || !json_int(&c, &s->counter)) return 0;
    if (!lit(&c, ",\"kind\":\"snapshot\",\"prev\":") || !hex64(&c, &prevhex)) return 0;
    if (!lit(&c, ",\"serial\":") || !plain_string(&c, &ser, &sern)) return 0;
    if (!lit(&c, ",\"v\":2}") || c.p != c.end) return 0;
    for (i = 0; i < s->ntrig; i++) {
        if (!(s->lo < s->trig[i] && s->trig[i] <= s->busy)) return 0;
        for (j = 0; j < i; j++)
            if (s->trig[j] == s->trig[i]) return 0;
    }
    /* The regions as the verifier cuts them from the line (first `,"regions":[`, then the first
       `],"shard_digest":"` after it): this reader's array must end exactly there.  The first
       `,"regions":[` is the one read above: before it, only the literals' `,"e`, `,"h` and a
       string with no quote inside can hold `,"`.  Inside the regions a later key can be
       `"shard_digest"` after an array, so the end is searched for. */
    cut = regions - 11;
    cut_end = find_regions_end(cut, line + n);
    if (!cut_end || cut_end + 1 != regions_end) return 0;
    unhex32(prevhex, s->prev);
    s->regions = regions - line;
    s->regions_end = regions_end - line;
    s->serial = ser - line;
    s->serial_n = sern;
    *digest_out = digest;
    return 1;
}

/* The leaf hash (RFC 9162: SHA-256 of 0x00 || line) and the chain hash (SHA-256 of the line),
   together and with no copy of the line. */
static int hash_line(const char *line, Py_ssize_t n, unsigned char leaf[32], unsigned char chain[32], Buf *scratch) {
    static const unsigned char leaf_prefix[1] = {0};
    const unsigned char *p = (const unsigned char *)line;
    sha256_pair(leaf_prefix, 1, p, (size_t)n, leaf, NULL, 0, p, (size_t)n, chain);
    return 1;
}

/* `count` interior nodes, SHA-256 of 0x01 || l || r, where each node's l || r lies at
   below + 64 * j (a level's hashes are contiguous), two at a time. */
static void node_level(const unsigned char *below, unsigned char *out, Py_ssize_t count) {
    static const unsigned char node_prefix[1] = {1};
    Py_ssize_t j;
    for (j = 0; j + 1 < count; j += 2)
        sha256_pair(node_prefix, 1, below + 64 * j, 64, out + 32 * j, node_prefix, 1, below + 64 * (j + 1), 64,
                    out + 32 * (j + 1));
    if (j < count) sha256_pre(node_prefix, 1, below + 64 * j, 64, out + 32 * j);
}

/* ---------------------------------------------------------------- LogLines: a log's lines in place */

/* log_lines(data) indexes a log's complete lines where they lie in `data` (the offsets of its
   newlines, found with memchr) instead of copying each into a bytes object, as
   formats.chip_entry.split_log does: the prescan and scan_entries read the lines straight from
   the buffer, and a bytes object is made only for a line Python asks for (lines[i]). The lines
   and the torn tail are exactly split_log's: split on b"\n" alone, empty lines kept, the bytes
   after the last newline a torn tail. */

typedef struct {
    PyObject_HEAD
    PyObject *data;   /* the log (bytes: immutable, so the offsets stay valid) */
    Py_ssize_t n;     /* complete lines */
    Py_ssize_t *off;  /* off[i]: where line i starts; off[n]: the end of the last newline */
} LogLines;

static inline const char *lines_ptr(const LogLines *ll, Py_ssize_t i) { return PyBytes_AS_STRING(ll->data) + ll->off[i]; }
static inline Py_ssize_t lines_len(const LogLines *ll, Py_ssize_t i) { return ll->off[i + 1] - ll->off[i] - 1; }

static void loglines_dealloc(LogLines *ll) {
    Py_XDECREF(ll->data);
    free(ll->off);
    Py_TYPE(ll)->tp_free((PyObject *)ll);
}

static Py_ssize_t loglines_length(LogLines *ll) { return ll->n; }

static PyObject *loglines_item(LogLines *ll, Py_ssize_t i) {
    if (i < 0 || i >= ll->n) {
        PyErr_SetString(PyExc_IndexError, "line index out of range");
        return NULL;
    }
    return PyBytes_FromStringAndSize(lines_ptr(ll, i), lines_len(ll, i));
}

/* lines[i] (negative i from the end) or lines[a:b:c] (a list of bytes), as a list would give. */
static PyObject *loglines_subscript(LogLines *ll, PyObject *key) {
    Py_ssize_t start, stop, step, count, k;
    PyObject *out;
    if (PyIndex_Check(key)) {
        Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred()) return NULL;
        return loglines_item(ll, i < 0 ? i + ll->n : i);
    }
    if (!PySlice_Check(key)) {
        PyErr_Format(PyExc_TypeError, "LogLines indices must be integers or slices, not %.200s", Py_TYPE(key)->tp_name);
        return NULL;
    }
    if (PySlice_Unpack(key, &start, &stop, &step) < 0) return NULL;
    count = PySlice_AdjustIndices(ll->n, &start, &stop, step);
    out = PyList_New(count);
    for (k = 0; out && k < count; k++) {
        PyObject *line = loglines_item(ll, start + k * step);
        if (!line) Py_CLEAR(out);
        else PyList_SET_ITEM(out, k, line);
    }
    return out;
}

/* lines.containing(needle): the indices of the lines that contain `needle` (no newline in it), in
   order: one memmem over the buffer, each hit placed by a binary search of the line starts. */
static PyObject *loglines_containing(LogLines *ll, PyObject *arg) {
    const char *base = PyBytes_AS_STRING(ll->data), *end = base + ll->off[ll->n], *p, *hit;
    Py_ssize_t lo, hi, m;
    PyObject *out, *index;
    if (!PyBytes_Check(arg) || PyBytes_GET_SIZE(arg) == 0 || memchr(PyBytes_AS_STRING(arg), '\n', (size_t)PyBytes_GET_SIZE(arg))) {
        PyErr_SetString(PyExc_ValueError, "containing() takes non-empty bytes without a newline");
        return NULL;
    }
    out = PyList_New(0);
    for (p = base; out && p < end &&
                   (hit = memmem(p, (size_t)(end - p), PyBytes_AS_STRING(arg), (size_t)PyBytes_GET_SIZE(arg))) != NULL;) {
        for (lo = 0, hi = ll->n; hi - lo > 1;) { /* the last line start at or before the hit */
            m = (lo + hi) / 2;
            if (ll->off[m] <= hit - base) lo = m;
            else hi = m;
        }
        index = PyLong_FromSsize_t(lo);
        if (!index || PyList_Append(out, index) < 0) Py_CLEAR(out);
        Py_XDECREF(index);
        p = base + ll->off[lo + 1]; /* (a hit lies inside one line: the needle has no newline) */
    }
    return out;
}

static PyMethodDef loglines_methods[] = {
    {"containing", (PyCFunction)loglines_containing, METH_O,
     "containing(needle) -> the indices of the lines that contain `needle` (bytes, no newline), in order"},
    {NULL, NULL, 0, NULL}};

static PyMappingMethods loglines_as_mapping = {
    .mp_length = (lenfunc)loglines_length,
    .mp_subscript = (binaryfunc)loglines_subscript,
};

static PyObject *loglines_torn(LogLines *ll, void *closure) {
    return PyLong_FromSsize_t(PyBytes_GET_SIZE(ll->data) - ll->off[ll->n]);
}

static PyObject *loglines_data(LogLines *ll, void *closure) { return Py_NewRef(ll->data); }

static PyGetSetDef loglines_getset[] = {
    {"torn", (getter)loglines_torn, NULL, "bytes after the last newline (a torn tail; 0 if none)", NULL},
    {"data", (getter)loglines_data, NULL, "the log the lines are read from", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PySequenceMethods loglines_as_sequence = {
    .sq_length = (lenfunc)loglines_length,
    .sq_item = (ssizeargfunc)loglines_item,
};

static PyTypeObject LogLinesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "computewatch._native._chiplog.LogLines",
    .tp_basicsize = sizeof(LogLines),
    .tp_dealloc = (destructor)loglines_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A log's complete lines, indexed in place (log_lines()): len(), lines[i] (bytes, made on demand), torn.",
    .tp_getset = loglines_getset,
    .tp_methods = loglines_methods,
    .tp_as_sequence = &loglines_as_sequence,
    .tp_as_mapping = &loglines_as_mapping,
};

static PyObject *log_lines(PyObject *self, PyObject *arg) {
    LogLines *ll;
    const char *base, *p, *end, *nl;
    Py_ssize_t cap = 1024, n = 0, *off;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "log_lines reads bytes");
        return NULL;
    }
    ll = PyObject_New(LogLines, &LogLinesType);
    if (!ll) return NULL;
    ll->data = Py_NewRef(arg);
    ll->n = 0;
    ll->off = off = malloc(sizeof(Py_ssize_t) * (size_t)cap);
    if (!off) goto nomem;
    base = PyBytes_AS_STRING(arg);
    end = base + PyBytes_GET_SIZE(arg);
    off[0] = 0;
    Py_BEGIN_ALLOW_THREADS
    for (p = base; p < end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL; p = nl + 1) {
        if (n + 2 > cap) {
            Py_ssize_t *grown = realloc(off, sizeof(Py_ssize_t) * (size_t)(cap *= 2));
            if (!grown) {
                n = -1;
                break;
            }
            off = grown;
        }
        off[++n] = nl + 1 - base;
    }
    Py_END_ALLOW_THREADS
    ll->off = off;
    if (n < 0) goto nomem;
    ll->n = n;
    return (PyObject *)ll;
nomem:
    PyErr_NoMemory();
    Py_DECREF(ll);
    return NULL;
}

/* A snapshot line's leaf and chain hashes and its shard document's BLAKE3 together: with SHA-NI
   and a document of one BLAKE3 chunk (1024 bytes), one BLAKE3 compression (the vector units)
   after each pair of SHA-256 blocks (the SHA unit), so the two kinds of work overlap in the
   core; otherwise one after the other.  The same hashes either way (tests/test_native_hashes.py). */
static void hash_line_and_doc(const char *line, Py_ssize_t n, unsigned char leaf[32], unsigned char chain[32],
                              const char *regions, size_t rn, unsigned char d[32]) {
#ifdef HAVE_X86_SIMD
    static const unsigned char leaf_prefix[1] = {0};
    unsigned char doc[1024];
    size_t len = sha_backend == SHA_NI ? shard_doc_lay(doc, regions, rn) : 0;
    if (len) {
        ShaMsg ma, mb;
        uint32_t ha[8], hb[8], cv[8];
        size_t k, j = 0, ka, kb, nb = (len + 63) / 64;
        int i;
        sha_msg(&ma, leaf_prefix, 1, (const unsigned char *)line, (size_t)n);
        sha_msg(&mb, NULL, 0, (const unsigned char *)line, (size_t)n);
        ka = ma.nfull + ma.ntail;
        kb = mb.nfull + mb.ntail;
        memcpy(ha, IV, sizeof ha);
        memcpy(hb, IV, sizeof hb);
        memcpy(cv, IV, sizeof cv);
        for (k = 0; k < ka || k < kb || j < nb; k++) {
            if (k < ka && k < kb)
                sha256_blocks2_shani(ha, sha_msg_block(&ma, k), hb, sha_msg_block(&mb, k), 1);
            else if (k < ka)
                sha256_blocks_shani(ha, sha_msg_block(&ma, k), 1);
            else if (k < kb)
                sha256_blocks_shani(hb, sha_msg_block(&mb, k), 1);
            if (j < nb) { /* block j of the document's only chunk (the root) */
                int last = j + 1 == nb;
                b3_compress(cv, doc + 64 * j, last ? (uint32_t)(len - 64 * j) : 64, 0,
                            (j == 0 ? CHUNK_START : 0) | (last ? CHUNK_END | ROOT : 0), cv);
                j++;
            }
        }
        sha_digest(ha, leaf);
        sha_digest(hb, chain);
        for (i = 0; i < 8; i++) {
            d[4 * i] = (unsigned char)cv[i]; d[4 * i + 1] = (unsigned char)(cv[i] >> 8);
            d[4 * i + 2] = (unsigned char)(cv[i] >> 16); d[4 * i + 3] = (unsigned char)(cv[i] >> 24);
        }
        return;
    }
#endif
    hash_line(line, n, leaf, chain, NULL);
    shard_doc_digest(regions, rn, d);
}

/* ---------------------------------------------------------------- BLAKE3 of 8 documents at once */

/* The shard documents of a chunk's snapshot lines, hashed 8 at a time (AVX2: one document per
   32-bit lane, the lanes' compressions side by side) where each fits one BLAKE3 chunk (1024
   bytes: the document is the root chunk, counter 0). A lane whose document has fewer blocks keeps
   its chaining value once its last block is done.  The same digests as b3_* one by one
   (tests/test_native_hashes.py compares blake3_many with blake3). */
#define B3_LANES 8
#define B3_DOC_MAX 1024
typedef struct {
    unsigned char doc[B3_LANES][B3_DOC_MAX]; /* each zero-padded to a multiple of 64 bytes */
    size_t len[B3_LANES];
    int count;
} B3Batch;

/* Lay the document of `regions` (rn bytes) into lane `k`; 0 when it is longer than one chunk. */
static int b3_batch_put(B3Batch *b, int k, const char *regions, size_t rn) {
    b->len[k] = shard_doc_lay(b->doc[k], regions, rn);
    return b->len[k] != 0;
}

#ifdef HAVE_X86_SIMD
#define AVX2FN __attribute__((target("avx2")))
#define ROT8X(x, n) _mm256_or_si256(_mm256_srli_epi32((x), (n)), _mm256_slli_epi32((x), 32 - (n)))
#define G8(a, b, c, d, mx, my)                                                                 \
    do {                                                                                       \
        v[a] = _mm256_add_epi32(_mm256_add_epi32(v[a], v[b]), (mx)); v[d] = ROT8X(_mm256_xor_si256(v[d], v[a]), 16); \
        v[c] = _mm256_add_epi32(v[c], v[d]); v[b] = ROT8X(_mm256_xor_si256(v[b], v[c]), 12);                   \
        v[a] = _mm256_add_epi32(_mm256_add_epi32(v[a], v[b]), (my)); v[d] = ROT8X(_mm256_xor_si256(v[d], v[a]), 8);  \
        v[c] = _mm256_add_epi32(v[c], v[d]); v[b] = ROT8X(_mm256_xor_si256(v[b], v[c]), 7);                    \
    } while (0)

static int have_avx2 = 0;

AVX2FN static void b3_hash8(const B3Batch *b, unsigned char out[B3_LANES][32]) {
    __m256i h[8], v[16], m[16];
    uint32_t words[16][B3_LANES], blen[B3_LANES], flags[B3_LANES], active[B3_LANES], hv[8][B3_LANES];
    size_t nb[B3_LANES], most = 0, blk;
    int k, i, r;
    for (k = 0; k < B3_LANES; k++) {
        nb[k] = k < b->count ? (b->len[k] + 63) / 64 : 0;
        if (k < b->count && nb[k] == 0) nb[k] = 1;
        if (nb[k] > most) most = nb[k];
    }
    for (i = 0; i < 8; i++) h[i] = _mm256_set1_epi32((int)IV[i]);
    for (blk = 0; blk < most; blk++) {
        for (k = 0; k < B3_LANES; k++) {
            int live = blk < nb[k], last = live && blk + 1 == nb[k];
            for (i = 0; i < 16; i++) {
                uint32_t w = 0;
                if (live) memcpy(&w, b->doc[k] + 64 * blk + 4 * i, 4); /* (x86: little-endian) */
                words[i][k] = w;
            }
            blen[k] = !live ? 0 : last ? (uint32_t)(b->len[k] - 64 * blk) : 64;
            flags[k] = !live ? 0 : (blk == 0 ? CHUNK_START : 0) | (last ? CHUNK_END | ROOT : 0);
            active[k] = live ? 0xFFFFFFFFu : 0;
        }
        for (i = 0; i < 16; i++) m[i] = _mm256_loadu_si256((const __m256i *)words[i]);
        for (i = 0; i < 8; i++) v[i] = h[i];
        for (i = 0; i < 4; i++) v[8 + i] = _mm256_set1_epi32((int)IV[i]);
        v[12] = _mm256_setzero_si256(); /* counter 0: every document is its hash's only chunk */
        v[13] = _mm256_setzero_si256();
        v[14] = _mm256_loadu_si256((const __m256i *)blen);
        v[15] = _mm256_loadu_si256((const __m256i *)flags);
        for (r = 0; r < 7; r++) {
            const unsigned char *s = SIGMA[r];
            G8(0, 4, 8, 12, m[s[0]], m[s[1]]);
            G8(1, 5, 9, 13, m[s[2]], m[s[3]]);
            G8(2, 6, 10, 14, m[s[4]], m[s[5]]);
            G8(3, 7, 11, 15, m[s[6]], m[s[7]]);
            G8(0, 5, 10, 15, m[s[8]], m[s[9]]);
            G8(1, 6, 11, 12, m[s[10]], m[s[11]]);
            G8(2, 7, 8, 13, m[s[12]], m[s[13]]);
            G8(3, 4, 9, 14, m[s[14]], m[s[15]]);
        }
        {
            __m256i live = _mm256_loadu_si256((const __m256i *)active);
            for (i = 0; i < 8; i++) h[i] = _mm256_blendv_epi8(h[i], _mm256_xor_si256(v[i], v[i + 8]), live);
        }
    }
    for (i = 0; i < 8; i++) _mm256_storeu_si256((__m256i *)hv[i], h[i]);
    for (k = 0; k < b->count; k++)
        for (i = 0; i < 8; i++) {
            uint32_t w = hv[i][k];
            out[k][4 * i] = (unsigned char)w; out[k][4 * i + 1] = (unsigned char)(w >> 8);
            out[k][4 * i + 2] = (unsigned char)(w >> 16); out[k][4 * i + 3] = (unsigned char)(w >> 24);
        }
}
#endif

#ifdef HAVE_X86_SIMD
#define B3_BATCHED() (have_avx2 && b3_compress_full != b3_compress_portable)
#else
#define B3_BATCHED() 0
#endif

/* The digests of a batch: 8 lanes at once where the CPU has AVX2 and the BLAKE3 backend in use is
   not the portable one (tests force that one to check the scalar code), else one by one. */
static void b3_batch_digests(const B3Batch *b, unsigned char out[B3_LANES][32]) {
    int k;
#ifdef HAVE_X86_SIMD
    if (have_avx2 && b3_compress_full != b3_compress_portable) {
        b3_hash8(b, out);
        return;
    }
#endif
    for (k = 0; k < b->count; k++) {
        B3 h;
        b3_init(&h);
        b3_update(&h, b->doc[k], b->len[k]);
        b3_final(&h, out[k]);
    }
}

/* shard_digests([regions, ...]) -> the BLAKE3 digest of each one's shard document, through the
   prescan's batches (tests: lanes of different lengths; a document over one chunk is refused). */
static PyObject *py_shard_digests(PyObject *self, PyObject *arg) {
    B3Batch *batch;
    unsigned char d[B3_LANES][32];
    Py_ssize_t n, i, base;
    PyObject *out;
    int k;
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "shard_digests takes a list of bytes");
        return NULL;
    }
    n = PyList_GET_SIZE(arg);
    batch = malloc(sizeof *batch);
    out = batch ? PyList_New(n) : PyErr_NoMemory();
    if (!out) {
        free(batch);
        return NULL;
    }
    for (base = 0; base < n; base += B3_LANES) {
        batch->count = 0;
        for (i = base; i < n && i < base + B3_LANES; i++) {
            PyObject *r = PyList_GET_ITEM(arg, i);
            if (!PyBytes_Check(r) || !b3_batch_put(batch, batch->count++, PyBytes_AS_STRING(r), (size_t)PyBytes_GET_SIZE(r))) {
                PyErr_SetString(PyExc_ValueError, "each item must be bytes whose shard document fits one BLAKE3 chunk");
                free(batch);
                Py_DECREF(out);
                return NULL;
            }
        }
        b3_batch_digests(batch, d);
        for (k = 0; k < batch->count; k++) PyList_SET_ITEM(out, base + k, PyBytes_FromStringAndSize((const char *)d[k], 32));
    }
    free(batch);
    return out;
}

/* ---------------------------------------------------------------- Prescan: every line read ahead */

/* prescan() starts background threads that read the log's lines in chunks, in order, without
   the GIL, and returns at once: the verifier checks entries in order while they read ahead.
   Whatever asks for a line's results (scan_entries, leaf, chain, node) first waits for its
   chunk; a waiting thread reads the next unread chunks itself rather than idle. */

#define MAX_LEVELS 62
#define MAX_THREADS 16

typedef struct {
    PyObject_HEAD
    PyObject *lines; /* a tuple, or a LogLines (in_place): keeps the bytes alive while threads read them */
    int in_place;    /* lines is a LogLines: scan_entries reads the same LogLines' lines ahead */
    Py_ssize_t n, chunks;
    const char **ptr;
    Py_ssize_t *len;
    unsigned char *leaf, *chain; /* n * 32 each */
    Snap *snap;
    unsigned char *level[MAX_LEVELS + 1]; /* level[k]: the (n >> k) perfect subtree hashes of 2**k leaves */
    int levels, chunk_log; /* lines are read in chunks of 2**chunk_log */
    int failed;             /* out of memory in a thread (atomic) */
    Py_ssize_t next_chunk;  /* the next chunk a thread takes (atomic) */
    unsigned char *done;    /* done[c]: chunk c read (atomic) */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t tid[MAX_THREADS];
    int started, sync_ok;
} Prescan;

/* Each batched snapshot's `ok`: its shard digest is the BLAKE3 of its document. */
static void prescan_digests(Prescan *ps, B3Batch *batch, const Py_ssize_t *at, const char *const *want) {
    unsigned char d[B3_LANES][32];
    int k;
    b3_batch_digests(batch, d);
    for (k = 0; k < batch->count; k++) ps->snap[at[k]].ok = digest_is(want[k], d[k]);
    batch->count = 0;
}

static void prescan_chunk(Prescan *ps, Py_ssize_t c, Buf *scratch) {
    Py_ssize_t lo = c << ps->chunk_log, hi = lo + ((Py_ssize_t)1 << ps->chunk_log), i, j;
    int k;
    B3Batch batch; /* shard documents waiting for their digests, 8 at a time */
    Py_ssize_t at[B3_LANES];
    const char *want[B3_LANES];
    int batched = B3_BATCHED();
    if (hi > ps->n) hi = ps->n;
    batch.count = 0;
    for (i = lo; i < hi; i++) {
        const char *line = ps->ptr[i], *digest;
        Snap *s = &ps->snap[i];
        if (snapshot_shape(line, ps->len[i], s, &digest)) {
            if (batched && b3_batch_put(&batch, batch.count, line + s->regions, (size_t)(s->regions_end - s->regions))) {
                at[batch.count] = i;
                want[batch.count++] = digest;
                if (!hash_line(line, ps->len[i], ps->leaf + 32 * i, ps->chain + 32 * i, scratch)) {
                    __atomic_store_n(&ps->failed, 1, __ATOMIC_RELEASE);
                    break;
                }
                if (batch.count == B3_LANES) prescan_digests(ps, &batch, at, want);
            } else { /* its three hashes together */
                unsigned char d[32];
                hash_line_and_doc(line, ps->len[i], ps->leaf + 32 * i, ps->chain + 32 * i, line + s->regions,
                                  (size_t)(s->regions_end - s->regions), d);
                s->ok = digest_is(digest, d);
            }
        } else if (!hash_line(line, ps->len[i], ps->leaf + 32 * i, ps->chain + 32 * i, scratch)) {
            __atomic_store_n(&ps->failed, 1, __ATOMIC_RELEASE);
            break;
        }
    }
    if (batch.count) prescan_digests(ps, &batch, at, want);
    /* The perfect subtrees inside this chunk (it starts at a multiple of its size). */
    for (k = 1; k <= ps->chunk_log && k <= ps->levels && i == hi; k++) {
        const unsigned char *below = k == 1 ? ps->leaf : ps->level[k - 1];
        j = lo >> k;
        node_level(below + 64 * j, ps->level[k] + 32 * j, (hi >> k) - j);
    }
    __atomic_store_n(&ps->done[c], 1, __ATOMIC_RELEASE);
    pthread_mutex_lock(&ps->lock);
    pthread_cond_broadcast(&ps->cond);
    pthread_mutex_unlock(&ps->lock);
}

/* Read chunks in order until none is left, or (until >= 0) until chunk `until` is read: a thread
   that waits for it reads the chunks after it meanwhile (both cores stay busy while the
   background threads are behind; it runs ahead by at most one chunk). */
static void prescan_work(Prescan *ps, Py_ssize_t until) {
    Buf scratch = {NULL, 0};
    Py_ssize_t c;
    while (!__atomic_load_n(&ps->failed, __ATOMIC_ACQUIRE)) {
        if (until >= 0 && __atomic_load_n(&ps->done[until], __ATOMIC_ACQUIRE)) break;
        c = __atomic_fetch_add(&ps->next_chunk, 1, __ATOMIC_RELAXED);
        if (c >= ps->chunks) break;
        prescan_chunk(ps, c, &scratch);
    }
    free(scratch.p);
}

static void *prescan_thread(void *arg) {
    prescan_work((Prescan *)arg, -1);
    return NULL;
}

/* 0 once line i has been read; -1 (MemoryError set) when a thread ran out of memory. Called
   with the GIL held; waits without it. */
static int prescan_wait(Prescan *ps, Py_ssize_t i) {
    Py_ssize_t c = i >> ps->chunk_log;
    if (!__atomic_load_n(&ps->done[c], __ATOMIC_ACQUIRE)) {
        Py_BEGIN_ALLOW_THREADS
        prescan_work(ps, c); /* read ahead while waiting */
        pthread_mutex_lock(&ps->lock);
        while (!__atomic_load_n(&ps->done[c], __ATOMIC_ACQUIRE) && !__atomic_load_n(&ps->failed, __ATOMIC_ACQUIRE))
            pthread_cond_wait(&ps->cond, &ps->lock); /* (after a failure no thread takes chunk c) */
        pthread_mutex_unlock(&ps->lock);
        Py_END_ALLOW_THREADS
    }
    if (__atomic_load_n(&ps->failed, __ATOMIC_ACQUIRE)) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void prescan_dealloc(Prescan *ps) {
    int k;
    if (ps->started) {
        __atomic_store_n(&ps->next_chunk, ps->chunks, __ATOMIC_RELAXED); /* nothing more to take */
        Py_BEGIN_ALLOW_THREADS
        for (k = 0; k < ps->started; k++) pthread_join(ps->tid[k], NULL);
        Py_END_ALLOW_THREADS
    }
    if (ps->sync_ok) {
        pthread_mutex_destroy(&ps->lock);
        pthread_cond_destroy(&ps->cond);
    }
    Py_XDECREF(ps->lines);
    free(ps->ptr);
    free(ps->len);
    free(ps->leaf);
    free(ps->chain);
    free(ps->snap);
    free(ps->done);
    for (k = 1; k <= MAX_LEVELS; k++) free(ps->level[k]);
    Py_TYPE(ps)->tp_free((PyObject *)ps);
}

static PyObject *prescan_node(Prescan *ps, PyObject *args) {
    Py_ssize_t lo, size;
    int k = 0;
    if (!PyArg_ParseTuple(args, "nn", &lo, &size)) return NULL;
    if (size < 1 || (size & (size - 1)) != 0 || lo < 0 || lo % size != 0 || lo > ps->n - size) Py_RETURN_NONE;
    while (((Py_ssize_t)1 << k) < size) k++;
    if (k > ps->chunk_log || k > ps->levels) Py_RETURN_NONE; /* above a chunk: the tree combines these */
    if (prescan_wait(ps, lo) < 0) return NULL;
    if (k == 0) return PyBytes_FromStringAndSize((const char *)ps->leaf + 32 * lo, 32);
    return PyBytes_FromStringAndSize((const char *)ps->level[k] + 32 * (lo >> k), 32);
}

static PyObject *prescan_hash(Prescan *ps, PyObject *arg, int chain) {
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (i < 0 || i >= ps->n) {
        PyErr_SetString(PyExc_IndexError, "line index outside the prescan");
        return NULL;
    }
    if (prescan_wait(ps, i) < 0) return NULL;
    return PyBytes_FromStringAndSize((const char *)(chain ? ps->chain : ps->leaf) + 32 * i, 32);
}

static PyObject *prescan_leaf(Prescan *ps, PyObject *arg) { return prescan_hash(ps, arg, 0); }
static PyObject *prescan_chain(Prescan *ps, PyObject *arg) { return prescan_hash(ps, arg, 1); }

static Py_ssize_t prescan_length(Prescan *ps) { return ps->n; }

static PyMethodDef prescan_methods[] = {
    {"node", (PyCFunction)prescan_node, METH_VARARGS,
     "node(lo, size) -> the hash of the perfect subtree of `size` leaves at `lo` (a leaf hash when size is 1), or"
     " None (not such a subtree, or one larger than a chunk)"},
    {"leaf", (PyCFunction)prescan_leaf, METH_O, "leaf(i) -> SHA-256(0x00 || line i)"},
    {"chain", (PyCFunction)prescan_chain, METH_O, "chain(i) -> SHA-256(line i)"},
    {NULL, NULL, 0, NULL}};

static PySequenceMethods prescan_as_sequence = {(lenfunc)prescan_length};

static PyTypeObject PrescanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "computewatch._native._chiplog.Prescan",
    .tp_basicsize = sizeof(Prescan),
    .tp_dealloc = (destructor)prescan_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A log's lines read ahead: hashes, Merkle subtrees, snapshot shapes (prescan()).",
    .tp_methods = prescan_methods,
    .tp_as_sequence = &prescan_as_sequence,
};

static PyObject *prescan(PyObject *self, PyObject *args) {
    PyObject *lines;
    int threads, chunk_log = 9, k;
    Py_ssize_t i;
    Prescan *ps;
    if (!PyArg_ParseTuple(args, "Oi|i", &lines, &threads, &chunk_log)) return NULL;
    if (chunk_log < 0 || chunk_log > 20) {
        PyErr_SetString(PyExc_ValueError, "chunk_log must be in 0..20");
        return NULL;
    }
    ps = PyObject_New(Prescan, &PrescanType);
    if (!ps) return NULL;
    ps->lines = NULL; ps->in_place = 0; ps->ptr = NULL; ps->len = NULL; ps->leaf = ps->chain = NULL; ps->snap = NULL; ps->done = NULL;
    memset(ps->level, 0, sizeof ps->level);
    ps->levels = 0; ps->failed = 0; ps->next_chunk = 0; ps->chunk_log = chunk_log; ps->started = 0; ps->sync_ok = 0;
    ps->n = ps->chunks = 0;
    if (pthread_mutex_init(&ps->lock, NULL) != 0) goto nomem;
    if (pthread_cond_init(&ps->cond, NULL) != 0) {
        pthread_mutex_destroy(&ps->lock);
        goto nomem;
    }
    ps->sync_ok = 1;
    ps->in_place = PyObject_TypeCheck(lines, &LogLinesType);
    ps->lines = ps->in_place ? Py_NewRef(lines) : PySequence_Tuple(lines);
    if (!ps->lines) goto fail;
    ps->n = ps->in_place ? ((LogLines *)lines)->n : PyTuple_GET_SIZE(ps->lines);
    ps->chunks = ps->n ? ((ps->n - 1) >> chunk_log) + 1 : 0;
    ps->ptr = malloc(sizeof(char *) * (size_t)(ps->n + 1));
    ps->len = malloc(sizeof(Py_ssize_t) * (size_t)(ps->n + 1));
    ps->leaf = malloc(32 * (size_t)(ps->n + 1));
    ps->chain = malloc(32 * (size_t)(ps->n + 1));
    ps->snap = malloc(sizeof(Snap) * (size_t)(ps->n + 1));
    ps->done = calloc((size_t)ps->chunks + 1, 1);
    if (!ps->ptr || !ps->len || !ps->leaf || !ps->chain || !ps->snap || !ps->done) goto nomem;
    for (i = 0; i < ps->n && ps->in_place; i++) {
        ps->ptr[i] = lines_ptr((LogLines *)lines, i);
        ps->len[i] = lines_len((LogLines *)lines, i);
    }
    for (i = 0; i < ps->n && !ps->in_place; i++) {
        PyObject *line = PyTuple_GET_ITEM(ps->lines, i);
        if (!PyBytes_Check(line)) {
            PyErr_SetString(PyExc_TypeError, "prescan reads a list of bytes");
            goto fail;
        }
        ps->ptr[i] = PyBytes_AS_STRING(line);
        ps->len[i] = PyBytes_GET_SIZE(line);
    }
    while (k = ps->levels + 1, k <= MAX_LEVELS && (ps->n >> k) > 0) {
        ps->level[k] = malloc(32 * (size_t)(ps->n >> k));
        if (!ps->level[k]) goto nomem;
        ps->levels = k;
    }
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    for (k = 0; k < threads && ps->chunks > 0; k++)
        if (pthread_create(&ps->tid[ps->started], NULL, prescan_thread, ps) == 0) ps->started++;
    return (PyObject *)ps;
nomem:
    PyErr_NoMemory();
fail:
    Py_DECREF(ps);
    return NULL;
}

/* ---------------------------------------------------------------- snapshot lines in the verifier's state */

typedef struct {
    const char *serial;
    Py_ssize_t serial_n;
    int64_t boot, epoch, counter, clock, busy;
    unsigned char prev[32];
    PyObject *triggers, *layouts;
    Buf buf, layout; /* scratch; the last layout accepted in this call */
    int has_layout;
} State;

/* The first `"digest":"` in [q, end), or NULL: blocks of 16 bytes where a quote is followed by a
   `d` (SSE2), each such place compared in full; memmem for the tail and elsewhere. */
static const char *find_digest_key(const char *q, const char *end) {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), d = _mm_set1_epi8('d');
    while (end - q >= 17 + 9) {
        unsigned mask = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)q), quote)) &
                        (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(q + 1)), d));
        while (mask) {
            const char *hit = q + __builtin_ctz(mask);
            if (memcmp(hit + 2, "igest\":\"", 8) == 0) return hit;
            mask &= mask - 1;
        }
        q += 16;
    }
#endif
    return memmem(q, (size_t)(end - q), "\"digest\":\"", 10);
}

/* The layout of a snapshot's regions: their text without the 64-hex digest fields (the verifier's
   `_REGION_DIGEST.sub(b"", cut)`). */
static size_t layout_of(const char *regions, const char *regions_end, char *out) {
    const char *q = regions, *hit;
    size_t kn = 0, m;
    /* Jump from one `"digest":"` to the next (the bytes between match nothing); a match that is
       not 64 hex digits and a quote stays in the text, as the regex leaves it. */
    while ((hit = find_digest_key(q, regions_end)) != NULL) {
        int field = regions_end - hit >= 75 && hit[74] == '"' && is_hex64(hit + 10);
        m = (size_t)(hit - q) + (field ? 0 : 1);
        memcpy(out + kn, q, m);
        kn += m;
        q = field ? hit + 75 : hit + 1;
    }
    memcpy(out + kn, q, (size_t)(regions_end - q));
    return kn + (size_t)(regions_end - q);
}

/* 1 when layout_of(regions, regions_end) would be lay[0..lay_n): the same walk, each piece
   compared where it lies (no copy; the common case, a snapshot of the last layout accepted). */
static int layout_is(const char *regions, const char *regions_end, const char *lay, size_t lay_n) {
    const char *q = regions, *hit;
    size_t kn = 0, m;
    while ((hit = find_digest_key(q, regions_end)) != NULL) {
        int field = regions_end - hit >= 75 && hit[74] == '"' && is_hex64(hit + 10);
        m = (size_t)(hit - q) + (field ? 0 : 1);
        if (m > lay_n - kn || memcmp(lay + kn, q, m) != 0) return 0;
        kn += m;
        q = field ? hit + 75 : hit + 1;
    }
    m = (size_t)(regions_end - q);
    return m == lay_n - kn && memcmp(lay + kn, q, m) == 0;
}

/* 1: the snapshot `s` (line `index`) fits the verifier's state, which moves on; 0: it does not
   (state as it was, nothing inserted); -1: a Python error. */
static int apply(State *st, const Snap *s, const char *line, Py_ssize_t index) {
    int i, ok;
    if (!s->ok) return 0;
    if (s->serial_n != st->serial_n || memcmp(line + s->serial, st->serial, (size_t)s->serial_n) != 0) return 0;
    if (s->counter != st->counter || s->boot != st->boot || s->epoch != st->epoch) return 0;
    if (memcmp(s->prev, st->prev, 32) != 0) return 0;
    if (s->clock < st->clock || s->busy < st->busy) return 0;
    PyObject *keys[MAX_TRIGGERS], *val;
    int nkeys = 0, rc = 1;
    for (i = 0; i < s->ntrig; i++) { /* (each key made once: looked up here, inserted below) */
        if (!(keys[nkeys] = PyLong_FromLongLong(s->trig[i]))) { rc = -1; goto out; }
        ok = PyDict_Contains(st->triggers, keys[nkeys++]);
        if (ok != 0) { rc = ok < 0 ? -1 : 0; goto out; }
    }
    /* A layout the verifier checked before (packing problem ""), or not accepted here. */
    {
        size_t rn = (size_t)(s->regions_end - s->regions), kn;
        if (!(st->has_layout && layout_is(line + s->regions, line + s->regions_end, st->layout.p, st->layout.cap))) {
            PyObject *key, *packing;
            if (!buf_reserve(&st->buf, rn)) { PyErr_NoMemory(); rc = -1; goto out; }
            kn = layout_of(line + s->regions, line + s->regions_end, st->buf.p);
            key = PyBytes_FromStringAndSize(st->buf.p, (Py_ssize_t)kn);
            if (!key) { rc = -1; goto out; }
            packing = PyDict_GetItemWithError(st->layouts, key);
            Py_DECREF(key);
            if (!packing) { rc = PyErr_Occurred() ? -1 : 0; goto out; }
            if (!PyUnicode_Check(packing) || PyUnicode_GET_LENGTH(packing) != 0) { rc = 0; goto out; }
            free(st->layout.p);
            st->layout.p = malloc(kn ? kn : 1);
            if (!st->layout.p) { st->has_layout = 0; st->layout.cap = 0; PyErr_NoMemory(); rc = -1; goto out; }
            memcpy(st->layout.p, st->buf.p, kn);
            st->layout.cap = kn; /* here: the layout's length */
            st->has_layout = 1;
        }
    }
    if (!(val = PyLong_FromSsize_t(index))) { rc = -1; goto out; }
    for (i = 0; i < nkeys && rc == 1; i++)
        if (PyDict_SetItem(st->triggers, keys[i], val) < 0) rc = -1;
    Py_DECREF(val);
    if (rc == 1) {
        st->counter = s->counter + 1;
        st->clock = s->clock;
        st->busy = s->busy;
    }
out:
    for (i = 0; i < nkeys; i++) Py_DECREF(keys[i]);
    return rc;
}

/* ---------------------------------------------------------------- the schedule's arrivals */

static double py_ulp(double x) { /* Python's math.ulp */
    double x2;
    if (isnan(x)) return x;
    x = fabs(x);
    if (isinf(x)) return x;
    x2 = nextafter(x, INFINITY);
    if (isinf(x2)) {
        x2 = nextafter(x, -INFINITY);
        return x - x2;
    }
    return x2 - x;
}

/* ln(u) correctly rounded to a double, from the C library's extended-precision logl where its
   value settles it: true ln(u) lies within LOGL_MARGIN (relative) of logl's (whose error is a few
   units of its 64-bit significand; LOGL_MARGIN allows 32 to 64 of them), and when both ends of
   that interval round to the same double, so does ln(u); that double is then also what a
   50-digit logarithm rounds to (schedule._slow_gap).  0 when undecided (the interval holds a
   midpoint between two doubles: a few draws in a hundred of those the window test leaves), or
   where long double is no wider than double or logl failed the self-check (logl_checked). */
#define LOGL_MARGIN 0x1p-58L
static int logl_ok = 0, logl_passed = 0; /* in use; passed the self-check */

static int cr_log(double u, double *out) {
#if LDBL_MANT_DIG >= 64
    long double l, e;
    double lo, hi;
    if (!logl_ok || !(u > 0.0 && u <= 1.0)) return 0;
    l = logl((long double)u);
    e = fabsl(l) * LOGL_MARGIN;
    lo = (double)(l - e);
    hi = (double)(l + e);
    if (lo != hi) return 0;
    *out = lo;
    return 1;
#else
    return 0;
#endif
}

/* logl against ln(u) to 80 digits (as double pairs hi + lo, from Python's decimal) at fixed
   points: within a quarter of LOGL_MARGIN, or cr_log stays off. */
static void logl_check(void) {
#if LDBL_MANT_DIG >= 64
    static const double V[][3] = {
        {0x1.0000000000000p-1, -0x1.62e42fefa39efp-1, -0x1.abc9e3b39803fp-56},
        {0x1.ccccccccccccdp-1, -0x1.af8e8210a415cp-4, 0x1.62ed262461c3cp-58},
        {0x1.999999999999ap-4, -0x1.26bb1bbb55515p+1, -0x1.8b752b6b15c17p-53},
        {0x1.4f8b588e368f1p-17, -0x1.7069e2aa2aa5bp+3, 0x1.41ab1374499c7p-52},
        {0x1.ffffde7210be9p-1, -0x1.0c6f82d74d230p-20, 0x1.3962ca9bd6672p-74},
        {0x1.8000000000000p-1, -0x1.269621134db92p-2, -0x1.e0efadd9db02bp-56},
        {0x1.3333333333333p-2, -0x1.34378fcbda721p+0, 0x1.9c1404e27f13dp-54},
        {0x1.0000000000000p-64, -0x1.62e42fefa39efp+5, -0x1.abc9e3b39803fp-50},
        {0x1.3c6ef372fe950p-1, -0x1.ecc2caec51608p-2, 0x1.308e8f7e4b9ddp-63},
        {0x1.ffffffffea028p-1, -0x1.5fd80000078e5p-37, 0x1.f9bff22764213p-91},
        {0x1.74224b73c2befp-3, -0x1.b492ce49d1277p+0, -0x1.52ff09549d0c1p-54},
        {0x1.281ddc7974df1p-1, -0x1.185b3fca04b20p-1, 0x1.5fd7920e77bf2p-60},
        {0x1.9a035e226e153p-3, -0x1.9bc20d30c8a1bp+0, -0x1.0db95bf12673ap-54},
        {0x1.72708a3dc64bfp-1, -0x1.4b66c2ebd4330p-2, 0x1.d6f645fb1d9e1p-59},
        {0x1.83b1f582d1f72p-1, -0x1.1cc7a1aaec27cp-2, -0x1.36de906aa965ep-59},
        {0x1.846a9c576ee81p-1, -0x1.1ae05f908d123p-2, 0x1.2f1846d2c5b3bp-56},
    };
    size_t k;
    logl_ok = 1;
    for (k = 0; k < sizeof V / sizeof V[0]; k++) {
        long double want = (long double)V[k][1] + (long double)V[k][2];
        if (fabsl(logl((long double)V[k][0]) - want) > fabsl(want) * (LOGL_MARGIN / 4)) logl_ok = 0;
    }
    logl_passed = logl_ok;
#endif
}

/* ln_rounded(u) -> ln(u) correctly rounded as cr_log finds it, or None where it is undecided
   (for tests: each must be what the 50-digit logarithm rounds to). */
/* use_logl(flag) -> whether cr_log was in use: tests turn it off (every undecided draw then goes
   to the exact logarithm) and on again (only where logl passed its self-check). */
static PyObject *py_use_logl(PyObject *self, PyObject *arg) {
    int was = logl_ok, on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    logl_ok = on && logl_passed;
    return PyBool_FromLong(was);
}

static PyObject *py_ln_rounded(PyObject *self, PyObject *arg) {
    double u = PyFloat_AsDouble(arg), c;
    if (u == -1.0 && PyErr_Occurred()) return NULL;
    if (!cr_log(u, &c)) Py_RETURN_NONE;
    return PyFloat_FromDouble(c);
}

/* arrivals(seed, mean_ns, start_ns, end_ns, window, exact_gap) -> list of arrival busy times: what
   formats.schedule.arrivals gives (same draws, same platform log, same window test); a draw the
   window test cannot settle is handed to exact_gap(u, mean_ns) (schedule.gap_ns). */
static PyObject *py_arrivals(PyObject *self, PyObject *args) {
    Py_buffer seed;
    double mean_ns, window;
    long long start, end;
    PyObject *exact, *out;
    uint32_t key[8], words[16];
    unsigned char block[64];
    uint64_t counter;
    int64_t t;
    int i, j;
    if (!PyArg_ParseTuple(args, "y*dLLdO", &seed, &mean_ns, &start, &end, &window, &exact)) return NULL;
    if (seed.len != 32) {
        PyBuffer_Release(&seed);
        PyErr_SetString(PyExc_ValueError, "seed must be 32 bytes");
        return NULL;
    }
    for (i = 0; i < 8; i++) {
        const unsigned char *b = (const unsigned char *)seed.buf + 4 * i;
        key[i] = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    }
    PyBuffer_Release(&seed);
    memset(block, 0, sizeof block);
    memcpy(block, "arrivals", 8);
    out = PyList_New(0);
    if (!out) return NULL;
    t = start;
    for (counter = 0;; counter++) {
        /* XOF output block `counter` of BLAKE3 keyed(seed, "arrivals"): eight 8-byte draws. */
        b3_compress_full(key, block, 8, counter, CHUNK_START | CHUNK_END | ROOT | KEYED_HASH, NULL, words);
        for (j = 0; j < 8; j++) {
            uint64_t draw = (uint64_t)words[2 * j] | (uint64_t)words[2 * j + 1] << 32;
            double u = draw == UINT64_MAX ? 1.0 : ldexp((double)(draw + 1), -64);
            double y = log(u), w = window * py_ulp(y), hi = y + w;
            int64_t g = -1;
            PyObject *v;
            if (hi < 0.0) {
                double a = -hi * mean_ns, b = -(y - w) * mean_ns;
                if (a < 9.0e18 && b < 9.0e18 && (int64_t)a == (int64_t)b) g = (int64_t)a + 1;
            }
            if (g < 0) { /* the window straddles a nanosecond: the correctly rounded logarithm decides */
                double c, a;
                if (cr_log(u, &c) && (a = -c * mean_ns) < 9.0e18) g = (int64_t)a + 1;
            }
            if (g < 0) { /* (cr_log undecided: the exact 50-digit logarithm, in Python) */
                PyObject *r = PyObject_CallFunction(exact, "dd", u, mean_ns);
                int overflow = 0;
                if (!r) goto fail;
                g = PyLong_AsLongLongAndOverflow(r, &overflow);
                Py_DECREF(r);
                if (g == -1 && PyErr_Occurred()) goto fail;
                if (overflow > 0) return out; /* beyond any end */
                if (overflow < 0 || g < 1) {
                    PyErr_SetString(PyExc_ValueError, "exact_gap returned a gap below 1 ns");
                    goto fail;
                }
            }
            if (g > INT64_MAX - t) return out;
            t += g;
            if (t > end) return out;
            v = PyLong_FromLongLong(t);
            if (!v || PyList_Append(out, v) < 0) {
                Py_XDECREF(v);
                goto fail;
            }
            Py_DECREF(v);
        }
    }
fail:
    Py_DECREF(out);
    return NULL;
}

/* ---------------------------------------------------------------- tree_root: a checkpoint's root */

/* An RFC 9162 interior node, SHA-256(0x01 || l || r); out may be l or r. */
static void tree_node(const unsigned char *l, const unsigned char *r, unsigned char out[32]) {
    unsigned char b[65];
    b[0] = 1;
    memcpy(b + 1, l, 32);
    memcpy(b + 33, r, 32);
    sha256(b, 65, out);
}

/* The hash of the perfect subtree of 2**m leaves at `lo` (aligned, inside the prescanned lines):
   the prescan's, inside a chunk; above a chunk, from `memo` (MerkleTree's cache of perfect
   subtrees, {(lo, 2**m): hash}), else hashed from its halves and kept there.  0, or -1 with a
   Python error set. */
static int perfect_node(Prescan *ps, PyObject *memo, Py_ssize_t lo, int m, unsigned char out[32]) {
    PyObject *key, *got;
    unsigned char l[32], r[32];
    int rc;
    if (m <= ps->chunk_log) {
        if (prescan_wait(ps, lo) < 0) return -1;
        memcpy(out, m == 0 ? ps->leaf + 32 * lo : ps->level[m] + 32 * (lo >> m), 32);
        return 0;
    }
    key = Py_BuildValue("(nn)", lo, (Py_ssize_t)1 << m);
    if (!key) return -1;
    got = PyDict_GetItemWithError(memo, key);
    if (got && PyBytes_Check(got) && PyBytes_GET_SIZE(got) == 32) {
        memcpy(out, PyBytes_AS_STRING(got), 32);
        Py_DECREF(key);
        return 0;
    }
    if (PyErr_Occurred() || perfect_node(ps, memo, lo, m - 1, l) < 0 ||
        perfect_node(ps, memo, lo + ((Py_ssize_t)1 << (m - 1)), m - 1, r) < 0) {
        Py_DECREF(key);
        return -1;
    }
    tree_node(l, r, out);
    got = PyBytes_FromStringAndSize((const char *)out, 32);
    rc = got ? PyDict_SetItem(memo, key, got) : -1;
    Py_XDECREF(got);
    Py_DECREF(key);
    return rc;
}

/* The RFC 9162 root of the first `size` prescanned lines (1 <= size <= n): the right fold of the
   perfect subtrees that `size`'s binary digits cut (a tree of n leaves splits at the largest power
   of two below n, its left part perfect).  0, or -1 with a Python error set. */
static int root_of(Prescan *ps, PyObject *memo, Py_ssize_t size, unsigned char out[32]) {
    unsigned char parts[64][32];
    Py_ssize_t lo = 0;
    int m, t = 0;
    for (m = 62; m >= 0; m--)
        if (size & ((Py_ssize_t)1 << m)) {
            if (perfect_node(ps, memo, lo, m, parts[t++]) < 0) return -1;
            lo += (Py_ssize_t)1 << m;
        }
    memcpy(out, parts[--t], 32);
    while (t-- > 0) tree_node(parts[t], out, out);
    return 0;
}

/* tree_root(prescan, size, memo) -> root_of(size): a checkpoint's root (PrescannedTree.root). */
static PyObject *tree_root(PyObject *self, PyObject *args) {
    PyObject *memo;
    Prescan *ps;
    Py_ssize_t size;
    unsigned char root[32];
    if (!PyArg_ParseTuple(args, "O!nO!", &PrescanType, &ps, &size, &PyDict_Type, &memo)) return NULL;
    if (size < 1 || size > ps->n) {
        PyErr_SetString(PyExc_ValueError, "tree size outside the prescanned lines");
        return NULL;
    }
    if (root_of(ps, memo, size, root) < 0) return NULL;
    return PyBytes_FromStringAndSize((const char *)root, 32);
}

/* ---------------------------------------------------------------- scan_entries: the schedule's lines too */

/* scan_entries() takes snapshot lines as apply() above allows, and the schedule's own lines, in
   log order: a schedule-commit that opens the next epoch at the signed firmware policy's rate, and a
   schedule-reveal whose seed matches the open epoch's commitment and whose drawn arrivals are
   exactly the triggers the epoch's snapshots served.  Each only when it has the exact canonical
   shape below (no signature, version 2) and the Python verifier would accept it with no problem
   and the same state change (formats.chip_audit: _check, _check_clock, _on_schedule_commit,
   _on_schedule_reveal); the seed's commitment and the arrivals come from the very Python
   functions the verifier calls.  A checkpoint (read ahead: its root comes from the prescan's
   subtrees) is taken when everything but its signature passes and the verifier's own signature
   step, called back, reports nothing.  It stops at the first line it does not take and never
   decides that an entry is bad; boots, shutdowns and every other kind go to Python. */

#define KIND_COMMIT 1
#define KIND_REVEAL 2
#define KIND_CHECKPOINT 3


typedef struct {
    int kind;                                      /* KIND_COMMIT, KIND_REVEAL, KIND_CHECKPOINT, or 0 */
    int64_t epoch, at, boot, busy, clock, counter; /* at: start_busy_ns, end_busy_ns, tree_size */
    double rate;                                   /* commit: float(snapshots_per_day) */
    const char *hex;                               /* commitment, seed or root: 64 hex */
    unsigned char prev[32];
    const char *serial;
    Py_ssize_t serial_n;
} Sched;

/* A rate as the chip writes it, "[0-9]+(.[0-9]+)?" of at most 30 characters, read as Python's
   float() reads that text (the same correctly rounded conversion).  Needs the GIL. */
static int rate_string(Cur *c, double *out) {
    const char *s, *q;
    char buf[32];
    if (!lit(c, "\"")) return 0;
    s = q = c->p;
    while (q < c->end && *q >= '0' && *q <= '9') q++;
    if (q == s) return 0;
    if (q < c->end && *q == '.') {
        const char *d = ++q;
        while (q < c->end && *q >= '0' && *q <= '9') q++;
        if (q == d) return 0;
    }
    if (q - s > 30 || q >= c->end || *q != '"') return 0;
    memcpy(buf, s, (size_t)(q - s));
    buf[q - s] = 0;
    *out = PyOS_string_to_double(buf, NULL, NULL);
    if (*out == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    c->p = q + 1;
    return 1;
}

/* The fields after the body of a version 2 entry of the given kind, unsigned or (`signed`) with a
   `sig` string (its base64 is the Python reader's to check). */
static int entry_tail(Cur *c, Sched *s, const char *kind_prev, int sig) {
    const char *prevhex;
    if (!lit(c, "},\"boot\":") || !json_int(c, &s->boot)) return 0;
    if (!lit(c, ",\"busy_ns\":") || !dec_string(c, &s->busy)) return 0;
    if (!lit(c, ",\"clock_ns\":") || !dec_string(c, &s->clock)) return 0;
    if (!lit(c, ",\"counter\":") || !json_int(c, &s->counter)) return 0;
    if (!lit_n(c, kind_prev, strlen(kind_prev)) || !hex64(c, &prevhex)) return 0;
    if (!lit(c, ",\"serial\":") || !plain_string(c, &s->serial, &s->serial_n)) return 0;
    if (sig && (!lit(c, ",\"sig\":") || !plain_string(c, NULL, NULL))) return 0;
    if (!lit(c, ",\"v\":2}") || c->p != c->end) return 0;
    unhex32(prevhex, s->prev);
    return 1;
}

/* The kind (s->kind) when the line is a schedule-commit or schedule-reveal of this strict shape
   (every byte printable ASCII, no escape: each string is its own canonical text), else 0. */
static int parse_sched(const char *line, Py_ssize_t n, Sched *s) {
    Cur c = {line, line + n, 1};
    s->kind = 0;
    if (!clean_ascii(line, n)) return 0;
    if (lit(&c, "{\"body\":{\"commitment\":")) {
        if (!hex64(&c, &s->hex)) return 0;
        if (!lit(&c, ",\"epoch\":") || !json_int(&c, &s->epoch)) return 0;
        if (!lit(&c, ",\"snapshots_per_day\":") || !rate_string(&c, &s->rate)) return 0;
        if (!lit(&c, ",\"start_busy_ns\":") || !dec_string(&c, &s->at)) return 0;
        if (!entry_tail(&c, s, ",\"kind\":\"schedule-commit\",\"prev\":", 0)) return 0;
        s->kind = KIND_COMMIT;
    } else if (lit(&c, "{\"body\":{\"end_busy_ns\":")) {
        if (!dec_string(&c, &s->at)) return 0;
        if (!lit(&c, ",\"epoch\":") || !json_int(&c, &s->epoch)) return 0;
        if (!lit(&c, ",\"reason\":") || !plain_string(&c, NULL, NULL)) return 0;
        if (!lit(&c, ",\"seed\":") || !hex64(&c, &s->hex)) return 0;
        if (!entry_tail(&c, s, ",\"kind\":\"schedule-reveal\",\"prev\":", 0)) return 0;
        s->kind = KIND_REVEAL;
    } else if (lit(&c, "{\"body\":{\"root\":")) {
        if (!hex64(&c, &s->hex)) return 0;
        if (!lit(&c, ",\"tree_size\":") || !json_int(&c, &s->at)) return 0;
        if (!entry_tail(&c, s, ",\"kind\":\"checkpoint\",\"prev\":", 1)) return 0;
        s->kind = KIND_CHECKPOINT;
    }
    return s->kind;
}

/* The open schedule epoch (the verifier's _Epoch). */
typedef struct {
    int open;
    int64_t index, entry, start;
    unsigned char commitment[32];
    PyObject *rate, *triggers; /* owned: a float; a dict, trigger busy ns -> snapshot entry */
} Epoch;

/* 1: the reveal `r` closes the open epoch with nothing to report (its seed's commitment, its end,
   the arrivals drawn from its seed equal to the triggers served); 0: not taken (an exception in
   either Python function is left for the verifier to meet again); -1: out of memory. */
static int reveal_fits(const Epoch *ep, const Sched *r, PyObject *commit_fn, PyObject *arrivals_fn) {
    PyObject *seed, *got, *lo = NULL, *hi = NULL, *expected = NULL, *key;
    unsigned char raw[32];
    int ok = 0;
    if (!ep->open || r->epoch != ep->index || r->at != r->busy) return 0;
    unhex32(r->hex, raw);
    seed = PyBytes_FromStringAndSize((const char *)raw, 32);
    if (!seed) return -1;
    got = PyObject_CallOneArg(commit_fn, seed);
    if (got && PyBytes_Check(got) && PyBytes_GET_SIZE(got) == 32 && memcmp(PyBytes_AS_STRING(got), ep->commitment, 32) == 0) {
        lo = PyLong_FromLongLong(ep->start);
        hi = PyLong_FromLongLong(r->at);
        if (lo && hi) expected = PyObject_CallFunctionObjArgs(arrivals_fn, seed, ep->rate, lo, hi, NULL);
        /* Arrivals strictly increase (each gap is at least 1 ns), so they equal the triggers as
           sets when there are as many and each is one: no set is built.  A list that does not
           strictly increase is not taken (the verifier's own comparison decides). */
        if (expected && PyList_Check(expected) && PyList_GET_SIZE(expected) == PyDict_GET_SIZE(ep->triggers)) {
            long long before = -1, t;
            Py_ssize_t k;
            ok = 1;
            for (k = 0; ok == 1 && k < PyList_GET_SIZE(expected); k++) {
                key = PyList_GET_ITEM(expected, k);
                t = PyLong_CheckExact(key) ? PyLong_AsLongLong(key) : -1;
                if (t == -1 && PyErr_Occurred()) PyErr_Clear(); /* (beyond int64: not taken) */
                ok = t >= 0 && t > before ? PyDict_Contains(ep->triggers, key) : 0;
                before = t;
            }
        }
    }
    if (ok < 0 || PyErr_Occurred()) {
        ok = PyErr_ExceptionMatches(PyExc_MemoryError) ? -1 : 0;
        if (!ok) PyErr_Clear();
    }
    Py_DECREF(seed);
    Py_XDECREF(got);
    Py_XDECREF(lo);
    Py_XDECREF(hi);
    Py_XDECREF(expected);
    return ok;
}

static PyObject *scan_entries(PyObject *self, PyObject *args) {
    PyObject *pre, *lines, *prev, *serial, *epoch_in, *rate_in, *commit_fn, *arrivals_fn, *memo, *on_checkpoint,
        *leaves, *epoch_out, *out = NULL;
    Py_ssize_t start, stop, i, snaps = 0, reveals = 0, commits = 0, checkpoints = 0;
    long long next_epoch, last_cp;
    double rate = 0.0;
    Prescan *ps = NULL;
    int in_place; /* lines is a LogLines: each line read where it lies (line stays NULL) */
    State st;
    Epoch ep;
    memset(&st, 0, sizeof st);
    memset(&ep, 0, sizeof ep);
    if (!PyArg_ParseTuple(args, "OOnnSSLLLLOO!LOOOOLO", &pre, &lines, &start, &stop, &prev, &serial,
                          &st.counter, &st.boot, &st.clock, &st.busy, &epoch_in, &PyDict_Type, &st.layouts,
                          &next_epoch, &rate_in, &commit_fn, &arrivals_fn, &memo, &last_cp, &on_checkpoint))
        return NULL;
    if (pre != Py_None) {
        if (!PyObject_TypeCheck(pre, &PrescanType)) {
            PyErr_SetString(PyExc_TypeError, "prescan must be a Prescan or None");
            return NULL;
        }
        ps = (Prescan *)pre;
    }
    if (!PyList_Check(lines) && !PyObject_TypeCheck(lines, &LogLinesType)) {
        PyErr_SetString(PyExc_TypeError, "lines must be a list of bytes or a LogLines");
        return NULL;
    }
    in_place = !PyList_Check(lines);
    if (PyBytes_GET_SIZE(prev) != 32 || start < 0 || stop > (in_place ? ((LogLines *)lines)->n : PyList_GET_SIZE(lines)) || start > stop ||
        (rate_in != Py_None && !PyFloat_Check(rate_in)) || (memo != Py_None && !PyDict_Check(memo))) {
        PyErr_SetString(PyExc_ValueError,
                        "prev must be 32 bytes, start/stop inside the lines, rate a float or None, memo a dict or None");
        return NULL;
    }
    if (rate_in != Py_None) rate = PyFloat_AS_DOUBLE(rate_in);
    if (epoch_in != Py_None) {
        const char *commitment;
        Py_ssize_t cn;
        if (!PyArg_ParseTuple(epoch_in, "LLLy#O!O!", &ep.index, &ep.entry, &ep.start, &commitment, &cn, &PyFloat_Type,
                              &ep.rate, &PyDict_Type, &ep.triggers))
            return NULL;
        if (cn != 32) {
            PyErr_SetString(PyExc_ValueError, "the epoch's commitment must be 32 bytes");
            return NULL;
        }
        memcpy(ep.commitment, commitment, 32);
        Py_INCREF(ep.rate);
        Py_INCREF(ep.triggers);
        ep.open = 1;
        st.epoch = ep.index;
        st.triggers = ep.triggers;
    }
    memcpy(st.prev, PyBytes_AS_STRING(prev), 32);
    st.serial = PyBytes_AS_STRING(serial);
    st.serial_n = PyBytes_GET_SIZE(serial);
    /* The leaf hashes of the lines taken, as bytes, only once one was not read ahead (None while
       every one was: the tree reads those from the prescan when asked, PrescannedTree). */
    leaves = NULL;
    for (i = start; i < stop; i++) {
        PyObject *line = in_place ? NULL : PyList_GET_ITEM(lines, i), *leaf;
        const char *p;
        Py_ssize_t n;
        Snap local;
        const Snap *s;
        Sched sc;
        unsigned char lh[32], ch[32];
        const unsigned char *leafp = NULL, *chainp = NULL;
        int rc;
        if (in_place) {
            p = lines_ptr((LogLines *)lines, i);
            n = lines_len((LogLines *)lines, i);
        } else {
            if (!PyBytes_Check(line)) break;
            p = PyBytes_AS_STRING(line);
            n = PyBytes_GET_SIZE(line);
        }
        /* read ahead: these very bytes (the prescan's own LogLines, or the very bytes objects it read) */
        if (ps && i < ps->n && (in_place ? ps->lines == lines : !ps->in_place && PyTuple_GET_ITEM(ps->lines, i) == line)) {
            if (prescan_wait(ps, i) < 0) goto done;
            s = &ps->snap[i];
            leafp = ps->leaf + 32 * i;
            chainp = ps->chain + 32 * i;
        } else {
            if (parse_snapshot(p, n, &local, &st.buf) < 0) { PyErr_NoMemory(); goto done; }
            s = &local;
        }
        if (s->ok) {
            if (!ep.open) break; /* a snapshot outside every epoch: the verifier's to report */
            rc = apply(&st, s, p, i);
            if (rc < 0) goto done;
            if (rc == 0) break;
            snaps++;
        } else {
            if (!parse_sched(p, n, &sc)) break;
            if (sc.serial_n != st.serial_n || memcmp(sc.serial, st.serial, (size_t)sc.serial_n) != 0) break;
            if (sc.counter != st.counter || sc.boot != st.boot || memcmp(sc.prev, st.prev, 32) != 0) break;
            if (sc.clock < st.clock || sc.busy < st.busy) break;
            if (sc.kind == KIND_CHECKPOINT) {
                /* What _on_checkpoint and _check_clock check (the size is the position, not below the
                   last checkpoint's, the root the prescanned lines' before it, busy time still unless
                   an epoch is open); its signature is the verifier's: on_checkpoint(i, line) is true
                   when the verifier took it with nothing to report. */
                unsigned char want[32], root[32];
                PyObject *taken;
                if (!leafp || memo == Py_None || on_checkpoint == Py_None || sc.at != i || i < 1 ||
                    (last_cp >= 0 && !(last_cp > 0 && last_cp <= i)) || (!ep.open && sc.busy != st.busy))
                    break;
                unhex32(sc.hex, want);
                if (root_of(ps, memo, i, root) < 0) goto done;
                if (memcmp(root, want, 32) != 0) break;
                taken = line ? PyObject_CallFunction(on_checkpoint, "nO", i, line)
                             : PyObject_CallFunction(on_checkpoint, "ny#", i, p, n);
                if (!taken) goto done;
                rc = PyObject_IsTrue(taken);
                Py_DECREF(taken);
                if (rc < 0) goto done;
                if (!rc) break;
                last_cp = i;
                checkpoints++;
            } else if (sc.kind == KIND_COMMIT) {
                /* No epoch open (so busy time must not have moved), the next index, the policy's
                   rate, the epoch starting at the entry's busy time. */
                PyObject *trig, *r;
                if (ep.open || rate_in == Py_None || sc.epoch != next_epoch || sc.rate != rate || sc.at != sc.busy ||
                    sc.busy != st.busy)
                    break;
                trig = PyDict_New();
                r = PyFloat_FromDouble(sc.rate);
                if (!trig || !r) {
                    Py_XDECREF(trig);
                    Py_XDECREF(r);
                    goto done;
                }
                Py_XSETREF(ep.triggers, trig);
                Py_XSETREF(ep.rate, r);
                unhex32(sc.hex, ep.commitment);
                ep.open = 1;
                ep.index = sc.epoch;
                ep.entry = i;
                ep.start = sc.at;
                st.epoch = ep.index;
                st.triggers = ep.triggers;
                next_epoch = sc.epoch + 1;
                commits++;
            } else {
                rc = reveal_fits(&ep, &sc, commit_fn, arrivals_fn);
                if (rc < 0) goto done;
                if (rc == 0) break;
                ep.open = 0;
                Py_CLEAR(ep.triggers);
                Py_CLEAR(ep.rate);
                st.triggers = NULL;
                reveals++;
            }
            st.counter = sc.counter + 1;
            st.clock = sc.clock;
            st.busy = sc.busy;
        }
        if (!leafp) {
            Py_ssize_t k;
            if (!hash_line(p, n, lh, ch, &st.buf)) { PyErr_NoMemory(); goto done; }
            leafp = lh;
            chainp = ch;
            if (!leaves) { /* the lines before this one were all read ahead */
                leaves = PyList_New(i - start);
                if (!leaves) goto done;
                for (k = start; k < i; k++) {
                    leaf = PyBytes_FromStringAndSize((const char *)ps->leaf + 32 * k, 32);
                    if (!leaf) goto done;
                    PyList_SET_ITEM(leaves, k - start, leaf);
                }
            }
        }
        memcpy(st.prev, chainp, 32);
        if (leaves) {
            leaf = PyBytes_FromStringAndSize((const char *)leafp, 32);
            if (!leaf || PyList_Append(leaves, leaf) < 0) {
                Py_XDECREF(leaf);
                goto done;
            }
            Py_DECREF(leaf);
        }
    }
    if (ep.open)
        epoch_out = Py_BuildValue("LLLy#OO", (long long)ep.index, (long long)ep.entry, (long long)ep.start,
                                  (const char *)ep.commitment, (Py_ssize_t)32, ep.rate, ep.triggers);
    else
        epoch_out = Py_NewRef(Py_None);
    if (epoch_out)
        out = Py_BuildValue("ny#OLLLNLnnnn", i, (const char *)st.prev, (Py_ssize_t)32, leaves ? leaves : Py_None, (long long)st.counter,
                            (long long)st.clock, (long long)st.busy, epoch_out, next_epoch, snaps, reveals, commits,
                            checkpoints);
done:
    Py_XDECREF(leaves);
    Py_XDECREF(ep.rate);
    Py_XDECREF(ep.triggers);
    free(st.buf.p);
    free(st.layout.p);
    return out;
}

/* ---------------------------------------------------------------- parse_line: a canonical line's value */

/* The value at the cursor, when it is in this reader's strict canonical subset (value() above:
   no float, no negative number, integers of at most 15 digits, strings of printable ASCII with
   nothing to escape, object keys strictly increasing, no whitespace); NULL otherwise, with a
   Python error set only when out of memory. */
static PyObject *build_value(Cur *c, int depth) {
    const char *s;
    Py_ssize_t n;
    int64_t v;
    PyObject *out, *key, *item;
    if (depth > 16 || c->p >= c->end) return NULL;
    switch (*c->p) {
    case '"':
        return plain_string(c, &s, &n) ? PyUnicode_FromStringAndSize(s, n) : NULL;
    case '{': {
        const char *prev = NULL;
        Py_ssize_t prevn = 0;
        c->p++;
        out = PyDict_New();
        if (!out || lit(c, "}")) return out;
        for (;;) {
            if (!plain_string(c, &s, &n)) break;
            if (prev) {
                int cmp = memcmp(prev, s, (size_t)(n < prevn ? n : prevn));
                if (cmp > 0 || (cmp == 0 && prevn >= n)) break;
            }
            prev = s;
            prevn = n;
            if (!lit(c, ":") || !(item = build_value(c, depth + 1))) break;
            key = PyUnicode_FromStringAndSize(s, n);
            if (!key || PyDict_SetItem(out, key, item) < 0) {
                Py_XDECREF(key);
                Py_DECREF(item);
                break;
            }
            Py_DECREF(key);
            Py_DECREF(item);
            if (lit(c, "}")) return out;
            if (!lit(c, ",")) break;
        }
        Py_DECREF(out);
        return NULL;
    }
    case '[':
        c->p++;
        out = PyList_New(0);
        if (!out || lit(c, "]")) return out;
        for (;;) {
            if (!(item = build_value(c, depth + 1))) break;
            if (PyList_Append(out, item) < 0) {
                Py_DECREF(item);
                break;
            }
            Py_DECREF(item);
            if (lit(c, "]")) return out;
            if (!lit(c, ",")) break;
        }
        Py_DECREF(out);
        return NULL;
    case 't':
        return lit(c, "true") ? Py_NewRef(Py_True) : NULL;
    case 'f':
        return lit(c, "false") ? Py_NewRef(Py_False) : NULL;
    case 'n':
        return lit(c, "null") ? Py_NewRef(Py_None) : NULL;
    default:
        if (!json_int(c, &v) || (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E'))) return NULL;
        return PyLong_FromLongLong(v);
    }
}

/* parse_line(line) -> the JSON object a log line holds when the line is that object's canonical
   text in the strict subset above, else None (the caller's careful parse decides, and names any
   problem).  Such a line reads the same with json.loads, with RFC 8785 and with canonical JSON
   version 1, and is its own encoding under each. */
static PyObject *parse_line(PyObject *self, PyObject *arg) {
    Cur c;
    PyObject *out;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "parse_line reads bytes");
        return NULL;
    }
    c.p = PyBytes_AS_STRING(arg);
    c.end = c.p + PyBytes_GET_SIZE(arg);
    c.clean = 1;
    if (c.p == c.end || *c.p != '{' || !clean_ascii(c.p, c.end - c.p)) Py_RETURN_NONE;
    out = build_value(&c, 0);
    if (!out) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    if (c.p != c.end) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

/* ---------------------------------------------------------------- module */

/* A 32-byte digest of a bytes-like object, by one of the hashes above. */
static PyObject *digest32(PyObject *arg, void (*hash)(const unsigned char *, size_t, unsigned char *)) {
    Py_buffer b;
    unsigned char d[32];
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    hash((const unsigned char *)b.buf, (size_t)b.len, d);
    PyBuffer_Release(&b);
    return PyBytes_FromStringAndSize((const char *)d, 32);
}

static PyObject *py_sha256(PyObject *self, PyObject *arg) { return digest32(arg, sha256); }

/* BLAKE3-256 of the concatenation of the arguments (bytes-like), fed to the hasher one by one
   as the shard document is. */
static PyObject *py_blake3(PyObject *self, PyObject *args) {
    B3 h;
    unsigned char d[32];
    Py_ssize_t i;
    b3_init(&h);
    for (i = 0; i < PyTuple_GET_SIZE(args); i++) {
        Py_buffer b;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(args, i), &b, PyBUF_SIMPLE) < 0) return NULL;
        b3_update(&h, (const unsigned char *)b.buf, (size_t)b.len);
        PyBuffer_Release(&b);
    }
    b3_final(&h, d);
    return PyBytes_FromStringAndSize((const char *)d, 32);
}

/* The implementations of a hash this module has (in the order it prefers them): their names,
   which ones this machine runs, and the one in use. */
typedef struct {
    const char *what;
    int n;
    const char *const *names;
    int (*available)(int);
    int (*get)(void);
    void (*set)(int);
} Choice;

static PyObject *choice_in_use(const Choice *c) { return PyUnicode_FromString(c->names[c->get()]); }

static PyObject *choice_names(const Choice *c) {
    PyObject *out = PyList_New(0);
    int i;
    if (!out) return NULL;
    for (i = 0; i < c->n; i++) {
        PyObject *name;
        if (!c->available(i)) continue;
        name = PyUnicode_FromString(c->names[i]);
        if (!name || PyList_Append(out, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(name);
    }
    return out;
}

static PyObject *choice_set(const Choice *c, PyObject *arg) {
    const char *name = PyUnicode_AsUTF8(arg);
    int i;
    if (!name) return NULL;
    for (i = 0; i < c->n; i++)
        if (strcmp(name, c->names[i]) == 0 && c->available(i)) {
            c->set(i);
            Py_RETURN_NONE;
        }
    PyErr_Format(PyExc_ValueError, "%s backend %R is not available", c->what, arg);
    return NULL;
}

static const char *const SHA_NAMES[] = {"builtin", "libcrypto", "sha-ni"}; /* indexed by SHA_* */

static int sha_available(int i) { return i == SHA_BUILTIN || (i == SHA_LIBCRYPTO && lc_final) || (i == SHA_NI && have_shani); }
static int sha_get(void) { return sha_backend; }
static void sha_set(int i) { sha_backend = i; }
static const Choice SHA_CHOICE = {"SHA-256", 3, SHA_NAMES, sha_available, sha_get, sha_set};

#ifdef HAVE_X86_SIMD
static const char *const B3_NAMES[] = {"portable", "sse4.1", "avx512"};
static const b3_compress_fn B3_FNS[] = {b3_compress_portable, b3_compress_sse41, b3_compress_avx512};
#else
static const char *const B3_NAMES[] = {"portable"};
static const b3_compress_fn B3_FNS[] = {b3_compress_portable};
#endif
#define N_B3 ((int)(sizeof B3_FNS / sizeof B3_FNS[0]))

static int b3_available(int i) {
#ifdef HAVE_X86_SIMD
    if (B3_FNS[i] == b3_compress_sse41) return __builtin_cpu_supports("sse4.1") && __builtin_cpu_supports("ssse3");
    if (B3_FNS[i] == b3_compress_avx512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2");
#endif
    return 1;
}

static int b3_get(void) {
    int i;
    for (i = N_B3 - 1; i > 0 && B3_FNS[i] != b3_compress_full; i--) {
    }
    return i;
}

static void b3_set(int i) { b3_compress_full = B3_FNS[i]; }
static const Choice B3_CHOICE = {"BLAKE3", N_B3, B3_NAMES, b3_available, b3_get, b3_set};

static PyObject *sha256_backend(PyObject *self, PyObject *noargs) { return choice_in_use(&SHA_CHOICE); }
static PyObject *sha256_backends(PyObject *self, PyObject *noargs) { return choice_names(&SHA_CHOICE); }
static PyObject *set_sha256_backend(PyObject *self, PyObject *arg) { return choice_set(&SHA_CHOICE, arg); }
static PyObject *blake3_backend(PyObject *self, PyObject *noargs) { return choice_in_use(&B3_CHOICE); }
static PyObject *blake3_backends(PyObject *self, PyObject *noargs) { return choice_names(&B3_CHOICE); }
static PyObject *set_blake3_backend(PyObject *self, PyObject *arg) { return choice_set(&B3_CHOICE, arg); }

static PyMethodDef methods[] = {
    {"scan_entries", scan_entries, METH_VARARGS,
     "scan_entries(prescan, lines, start, stop, prev, serial, counter, boot, clock_ns, busy_ns, epoch, layouts,"
     " next_epoch, rate, commitment, arrivals, memo, last_checkpoint, on_checkpoint) -> (end, prev, leaf_hashes,"
     " counter, clock_ns, busy_ns, epoch, next_epoch, snapshots, reveals, commits, checkpoints): the ordinary"
     " snapshot, schedule-commit, schedule-reveal and (with memo and on_checkpoint) checkpoint lines from `start`"
     " that the verifier would accept with no problem, and its state after them"},
    {"tree_root", tree_root, METH_VARARGS,
     "tree_root(prescan, size, memo) -> the RFC 9162 root of the first `size` prescanned lines (memo: the"
     " tree's cache of perfect subtrees, {(lo, size): hash}, read and filled above a chunk)"},
    {"parse_line", parse_line, METH_O,
     "parse_line(line) -> the JSON object of a log line in a strict canonical subset (no float, no negative"
     " number, integers below 10**15, printable ASCII strings with nothing to escape), or None"},
    {"prescan", prescan, METH_VARARGS,
     "prescan(lines, threads, chunk_log=9) -> Prescan: every line's hashes and snapshot shape, and the Merkle"
     " subtrees inside each chunk of 2**chunk_log lines, read ahead by `threads` background threads (and by any"
     " thread that waits for a line) without the GIL"},
    {"log_lines", log_lines, METH_O,
     "log_lines(data) -> LogLines: the complete lines of a log (bytes) indexed in place, as split_log splits"
     " them; .torn is the torn tail's length"},
    {"ln_rounded", py_ln_rounded, METH_O, "ln(u) correctly rounded from logl, or None where undecided."},
    {"use_logl", py_use_logl, METH_O, "use_logl(flag) -> whether the arrivals' logl path was in use (tests)."},
    {"shard_digests", py_shard_digests, METH_O,
     "shard_digests([regions, ...]) -> each one's shard document's BLAKE3, hashed as the prescan batches them"},
    {"arrivals", py_arrivals, METH_VARARGS,
     "arrivals(seed, mean_ns, start_ns, end_ns, window, exact_gap) -> the schedule's arrivals in (start, end]"},
    {"sha256", py_sha256, METH_O, "SHA-256 of a bytes-like object (the backend in use)."},
    {"blake3", py_blake3, METH_VARARGS, "blake3(*pieces) -> BLAKE3-256 of the pieces' concatenation (bytes-like)."},
    {"sha256_backend", sha256_backend, METH_NOARGS, "The SHA-256 backend in use: \"sha-ni\", \"libcrypto\" or \"builtin\"."},
    {"sha256_backends", sha256_backends, METH_NOARGS, "The SHA-256 backends this machine can use."},
    {"set_sha256_backend", set_sha256_backend, METH_O, "Choose a SHA-256 backend (tests and benchmarks)."},
    {"blake3_backend", blake3_backend, METH_NOARGS, "The BLAKE3 compression in use: \"avx512\", \"sse4.1\" or \"portable\"."},
    {"blake3_backends", blake3_backends, METH_NOARGS, "The BLAKE3 compressions this machine can use."},
    {"set_blake3_backend", set_blake3_backend, METH_O, "Choose a BLAKE3 compression (tests and benchmarks)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_chiplog", "The chip-log audit's native fast path.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__chiplog(void) {
    /* hashlib's libcrypto, only if this process already loaded it (no new library is pulled in). */
    static const char *names[] = {"libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so", NULL};
    int i;
    for (i = 0; names[i] && !lc_final; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_NOLOAD);
        if (h) {
            lc_init = (sha256_init_fn)dlsym(h, "SHA256_Init");
            lc_update = (sha256_update_fn)dlsym(h, "SHA256_Update");
            lc_final = (sha256_final_fn)dlsym(h, "SHA256_Final");
            if (!lc_init || !lc_update) lc_final = NULL;
        }
    }
    PyObject *m;
#ifdef HAVE_X86_SIMD
    __builtin_cpu_init();
    have_shani = cpu_has_shani();
    have_avx2 = __builtin_cpu_supports("avx2");
#endif
    /* The fastest available: SHA-NI, else libcrypto, else the portable code. */
    sha_backend = have_shani ? SHA_NI : lc_final ? SHA_LIBCRYPTO : SHA_BUILTIN;
    b3_init_sigma();
    for (i = N_B3 - 1; i > 0 && !b3_available(i); i--) {
    }
    b3_set(i);
    for (i = 0; i < 256; i++) HEXOK[i] = (i >= '0' && i <= '9') || (i >= 'a' && i <= 'f');
    logl_check();
    if (PyType_Ready(&PrescanType) < 0 || PyType_Ready(&LogLinesType) < 0) return NULL;
    m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&PrescanType);
    if (PyModule_AddObject(m, "Prescan", (PyObject *)&PrescanType) < 0) {
        Py_DECREF(&PrescanType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&LogLinesType);
    if (PyModule_AddObject(m, "LogLines", (PyObject *)&LogLinesType) < 0) {
        Py_DECREF(&LogLinesType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
