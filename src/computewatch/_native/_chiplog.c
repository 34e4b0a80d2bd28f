/* The chip-log audit's native fast path (computewatch.formats.chip_audit).
 *
 * scan_snapshots() walks a run of log lines and accepts each one only while it is an ordinary
 * version 2 snapshot entry that the Python LogVerifier would accept with no problem: the exact
 * canonical shape below, chained to the previous line, numbered, timed and triggered as the
 * verifier's state requires, with a region layout the verifier already checked and a shard
 * digest that matches.  It stops at the first line it does not accept; the Python verifier then
 * checks that line (and names any problem).  Accepting is the only thing done here: this file
 * never decides that an entry is bad.
 *
 * SHA-256 (FIPS 180-4) and BLAKE3 (the BLAKE3 paper, section 2) are written here from their
 * specifications; where the process has already loaded libcrypto (hashlib's), its SHA256 is used
 * instead (the same function hashlib calls), and sha256_backend() says which one is in use.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
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

static void sha256_builtin(const unsigned char *data, size_t n, unsigned char out[32]) {
    uint32_t h[8];
    unsigned char tail[128];
    size_t full = n & ~(size_t)63, rest = n - full, i;
    uint64_t bits = (uint64_t)n * 8;
    memcpy(h, IV, sizeof h);
    for (i = 0; i < full; i += 64) sha256_block(h, data + i);
    memset(tail, 0, sizeof tail);
    memcpy(tail, data + full, rest);
    tail[rest] = 0x80;
    size_t tl = rest + 9 <= 64 ? 64 : 128;
    for (i = 0; i < 8; i++) tail[tl - 1 - i] = (unsigned char)(bits >> (8 * i));
    sha256_block(h, tail);
    if (tl == 128) sha256_block(h, tail + 64);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24); out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8); out[4 * i + 3] = (unsigned char)h[i];
    }
}

typedef unsigned char *(*sha256_fn)(const unsigned char *, size_t, unsigned char *);
static sha256_fn libcrypto_sha256 = NULL; /* hashlib's libcrypto, when loaded */
static int use_libcrypto = 0;

static void sha256(const unsigned char *data, size_t n, unsigned char out[32]) {
    if (use_libcrypto) libcrypto_sha256(data, n, out);
    else sha256_builtin(data, n, out);
}

/* ---------------------------------------------------------------- BLAKE3 (hash mode, 32 bytes) */

enum { CHUNK_START = 1, CHUNK_END = 2, PARENT = 4, ROOT = 8 };
static const int MSG_PERM[16] = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};

#define ROTR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define G(a, b, c, d, mx, my)                                   \
    do {                                                        \
        s[a] = s[a] + s[b] + (mx); s[d] = ROTR32(s[d] ^ s[a], 16); \
        s[c] = s[c] + s[d]; s[b] = ROTR32(s[b] ^ s[c], 12);      \
        s[a] = s[a] + s[b] + (my); s[d] = ROTR32(s[d] ^ s[a], 8);  \
        s[c] = s[c] + s[d]; s[b] = ROTR32(s[b] ^ s[c], 7);       \
    } while (0)

static void b3_compress(const uint32_t cv[8], const unsigned char block[64], uint32_t len, uint64_t counter,
                        uint32_t flags, uint32_t out[8]) {
    uint32_t m[16], t[16], s[16];
    int i, r;
    for (i = 0; i < 16; i++)
        m[i] = (uint32_t)block[4 * i] | (uint32_t)block[4 * i + 1] << 8 | (uint32_t)block[4 * i + 2] << 16 |
               (uint32_t)block[4 * i + 3] << 24;
    for (i = 0; i < 8; i++) s[i] = cv[i];
    s[8] = IV[0]; s[9] = IV[1]; s[10] = IV[2]; s[11] = IV[3];
    s[12] = (uint32_t)counter; s[13] = (uint32_t)(counter >> 32); s[14] = len; s[15] = flags;
    for (r = 0; r < 7; r++) {
        G(0, 4, 8, 12, m[0], m[1]); G(1, 5, 9, 13, m[2], m[3]);
        G(2, 6, 10, 14, m[4], m[5]); G(3, 7, 11, 15, m[6], m[7]);
        G(0, 5, 10, 15, m[8], m[9]); G(1, 6, 11, 12, m[10], m[11]);
        G(2, 7, 8, 13, m[12], m[13]); G(3, 4, 9, 14, m[14], m[15]);
        for (i = 0; i < 16; i++) t[i] = m[MSG_PERM[i]];
        memcpy(m, t, sizeof m);
    }
    for (i = 0; i < 8; i++) out[i] = s[i] ^ s[i + 8];
}

/* The chaining value of one chunk (at most 1024 bytes); `root` when it is the whole input. */
static void b3_chunk(const unsigned char *p, size_t n, uint64_t index, int root, uint32_t cv[8]) {
    uint32_t h[8];
    unsigned char block[64];
    size_t off = 0;
    int first = 1;
    memcpy(h, IV, sizeof h);
    do {
        size_t len = n - off > 64 ? 64 : n - off;
        int last = off + len >= n;
        uint32_t flags = (first ? CHUNK_START : 0) | (last ? CHUNK_END : 0) | (last && root ? ROOT : 0);
        memset(block, 0, 64);
        memcpy(block, p + off, len);
        b3_compress(h, block, (uint32_t)len, index, flags, h);
        off += len;
        first = 0;
    } while (off < n);
    memcpy(cv, h, sizeof h);
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

static void blake3(const unsigned char *p, size_t n, unsigned char out[32]) {
    uint32_t cv[8], stack[64][8];
    int depth = 0, i;
    uint64_t chunks = n == 0 ? 1 : (n + 1023) / 1024, c;
    if (chunks == 1) {
        b3_chunk(p, n, 0, 1, cv);
    } else {
        /* Chunks left to right; after chunk c (0-based, not the last) merge one parent per
           trailing zero bit of c + 1, as in the paper's incremental tree. */
        for (c = 0; c < chunks; c++) {
            size_t len = c + 1 < chunks ? 1024 : n - (size_t)c * 1024;
            b3_chunk(p + (size_t)c * 1024, len, c, 0, cv);
            if (c + 1 < chunks) {
                uint64_t total = c + 1;
                while ((total & 1) == 0) {
                    b3_parent(stack[--depth], cv, 0, cv);
                    total >>= 1;
                }
                memcpy(stack[depth++], cv, sizeof cv);
            }
        }
        while (depth > 0) {
            depth--;
            b3_parent(stack[depth], cv, depth == 0, cv);
        }
    }
    for (i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)cv[i]; out[4 * i + 1] = (unsigned char)(cv[i] >> 8);
        out[4 * i + 2] = (unsigned char)(cv[i] >> 16); out[4 * i + 3] = (unsigned char)(cv[i] >> 24);
    }
}

/* ---------------------------------------------------------------- a strict canonical reader */

typedef struct {
    const char *p, *end;
} Cur;

static int lit(Cur *c, const char *s) {
    size_t n = strlen(s);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, s, n) != 0) return 0;
    c->p += n;
    return 1;
}

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
    const char *q;
    if (c->p >= c->end || *c->p != '"') return 0;
    for (q = c->p + 1; q < c->end && *q != '"'; q++)
        if (*q < 0x20 || *q > 0x7e || *q == '\\') return 0;
    if (q >= c->end) return 0;
    if (s) *s = c->p + 1;
    if (n) *n = q - c->p - 1;
    c->p = q + 1;
    return 1;
}

static int hex64(Cur *c, const char **s) {
    int i;
    if (c->end - c->p < 66 || c->p[0] != '"' || c->p[65] != '"') return 0;
    for (i = 1; i <= 64; i++) {
        char ch = c->p[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return 0;
    }
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

static const char *find(const char *hay, const char *end, const char *needle) {
    size_t n = strlen(needle);
    const char *q;
    for (q = hay; q + n <= end; q++)
        if (*q == *needle && memcmp(q, needle, n) == 0) return q;
    return NULL;
}

static int is_hex64(const char *p) {
    int i;
    for (i = 0; i < 64; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) return 0;
    return 1;
}

static void to_hex(const unsigned char *d, char *out) {
    static const char *hx = "0123456789abcdef";
    int i;
    for (i = 0; i < 32; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
}

/* ---------------------------------------------------------------- scan_snapshots */

#define SHARD_HEAD "{\"hash\":\"blake3-256\",\"regions\":"
#define SHARD_TAIL ",\"v\":1}"
#define MAX_TRIGGERS 64

typedef struct {
    const char *serial;
    Py_ssize_t serial_n;
    int64_t boot, epoch, counter, clock, busy;
    unsigned char prev[32];
    PyObject *triggers, *layouts;
    char *buf;
    size_t bufcap;
} State;

/* 1: `line` (entry `index`) is accepted and the state advanced; 0: not accepted (state as it
   was, nothing inserted); -1: a Python error. */
static int accept(State *st, const char *line, Py_ssize_t n, Py_ssize_t index, unsigned char leaf[32]) {
    Cur c = {line, line + n};
    int64_t epoch, step, lo, boot, busy, clock, counter, trig[MAX_TRIGGERS];
    int ntrig = 0, i, j, ok;
    const char *regions, *regions_end, *digest, *prevhex, *ser, *cut, *cut_end;
    Py_ssize_t sern;
    char hexbuf[64];
    unsigned char d[32];

    if (!lit(&c, "{\"body\":{\"copy_out\":")) return 0;
    if (!plain_string(&c, NULL, NULL)) return 0;  /* the copy-out file name (a string; anything else goes to Python) */
    if (!lit(&c, ",\"epoch\":") || !json_int(&c, &epoch)) return 0;
    if (!lit(&c, ",\"hash\":\"blake3-256\",\"regions\":")) return 0;
    regions = c.p;
    if (*c.p != '[' || !value(&c, 1)) return 0;
    regions_end = c.p;
    if (!lit(&c, ",\"shard_digest\":") || !hex64(&c, &digest)) return 0;
    if (!lit(&c, ",\"step\":") || !json_int(&c, &step)) return 0;
    if (!lit(&c, ",\"step_start_busy_ns\":") || !dec_string(&c, &lo)) return 0;
    if (!lit(&c, ",\"triggers\":[")) return 0;
    do {
        if (ntrig == MAX_TRIGGERS || !dec_string(&c, &trig[ntrig++])) return 0;
    } while (lit(&c, ","));
    if (!lit(&c, "]},\"boot\":") || !json_int(&c, &boot)) return 0;
    if (!lit(&c, ",\"busy_ns\":") || !dec_string(&c, &busy)) return 0;
    if (!lit(&c, ",\"clock_ns\":") || !dec_string(&c, &clock)) return 0;
    if (!lit(&c, ",\"counter\":") || !json_int(&c, &counter)) return 0;
    if (!lit(&c, ",\"kind\":\"snapshot\",\"prev\":") || !hex64(&c, &prevhex)) return 0;
    if (!lit(&c, ",\"serial\":") || !plain_string(&c, &ser, &sern)) return 0;
    if (!lit(&c, ",\"v\":2}") || c.p != c.end) return 0;

    /* Where the verifier stands. */
    if (sern != st->serial_n || memcmp(ser, st->serial, (size_t)sern) != 0) return 0;
    if (counter != st->counter || boot != st->boot || epoch != st->epoch) return 0;
    to_hex(st->prev, hexbuf);
    if (memcmp(prevhex, hexbuf, 64) != 0) return 0;
    if (clock < st->clock || busy < st->busy) return 0;
    for (i = 0; i < ntrig; i++) {
        if (!(lo < trig[i] && trig[i] <= busy)) return 0;
        for (j = 0; j < i; j++)
            if (trig[j] == trig[i]) return 0;
        PyObject *key = PyLong_FromLongLong(trig[i]);
        if (!key) return -1;
        ok = PyDict_Contains(st->triggers, key);
        Py_DECREF(key);
        if (ok != 0) return ok < 0 ? -1 : 0;
    }

    /* The regions as the verifier cuts them from the line (first `,"regions":[`, then the first
       `],"shard_digest":"` after it): this reader's array must end exactly there. */
    cut = find(line, line + n, ",\"regions\":[");
    if (!cut || cut + 11 != regions) return 0;
    cut_end = find(cut, line + n, "],\"shard_digest\":\"");
    if (!cut_end || cut_end + 1 != regions_end) return 0;

    /* The layout: the regions' text without their 64-hex digest fields; checked by the verifier
       before (packing problem "") or not accepted here. */
    {
        size_t rn = (size_t)(regions_end - regions), need = rn + sizeof(SHARD_HEAD) + sizeof(SHARD_TAIL);
        size_t kn = 0;
        const char *q = regions;
        PyObject *key, *packing;
        if (need > st->bufcap) {
            char *nb = PyMem_Realloc(st->buf, need);
            if (!nb) { PyErr_NoMemory(); return -1; }
            st->buf = nb;
            st->bufcap = need;
        }
        while (q < regions_end) {
            if (regions_end - q >= 75 && memcmp(q, "\"digest\":\"", 10) == 0 && q[74] == '"' && is_hex64(q + 10)) {
                q += 75;
            } else {
                st->buf[kn++] = *q++;
            }
        }
        key = PyBytes_FromStringAndSize(st->buf, (Py_ssize_t)kn);
        if (!key) return -1;
        packing = PyDict_GetItemWithError(st->layouts, key);
        Py_DECREF(key);
        if (!packing) return PyErr_Occurred() ? -1 : 0;
        if (!PyUnicode_Check(packing) || PyUnicode_GET_LENGTH(packing) != 0) return 0;

        memcpy(st->buf, SHARD_HEAD, sizeof(SHARD_HEAD) - 1);
        memcpy(st->buf + sizeof(SHARD_HEAD) - 1, regions, rn);
        memcpy(st->buf + sizeof(SHARD_HEAD) - 1 + rn, SHARD_TAIL, sizeof(SHARD_TAIL) - 1);
        blake3((const unsigned char *)st->buf, sizeof(SHARD_HEAD) - 1 + rn + sizeof(SHARD_TAIL) - 1, d);
        to_hex(d, hexbuf);
        if (memcmp(hexbuf, digest, 64) != 0) return 0;
    }

    /* Accepted: the verifier's state moves on. */
    for (i = 0; i < ntrig; i++) {
        PyObject *key = PyLong_FromLongLong(trig[i]), *val = PyLong_FromSsize_t(index);
        int rc = key && val ? PyDict_SetItem(st->triggers, key, val) : -1;
        Py_XDECREF(key);
        Py_XDECREF(val);
        if (rc < 0) return -1;
    }
    {
        size_t need = (size_t)n + 1;
        if (need > st->bufcap) {
            char *nb = PyMem_Realloc(st->buf, need);
            if (!nb) { PyErr_NoMemory(); return -1; }
            st->buf = nb;
            st->bufcap = need;
        }
        st->buf[0] = 0; /* RFC 9162 leaf prefix */
        memcpy(st->buf + 1, line, (size_t)n);
        sha256((const unsigned char *)st->buf, need, leaf);
    }
    sha256((const unsigned char *)line, (size_t)n, st->prev);
    st->counter = counter + 1;
    st->clock = clock;
    st->busy = busy;
    return 1;
}

static PyObject *scan_snapshots(PyObject *self, PyObject *args) {
    PyObject *lines, *prev, *serial, *leaves, *out = NULL;
    Py_ssize_t start, stop, i;
    State st;
    memset(&st, 0, sizeof st);
    if (!PyArg_ParseTuple(args, "O!nnSSLLLLLO!O!", &PyList_Type, &lines, &start, &stop, &prev, &serial, &st.counter,
                          &st.boot, &st.clock, &st.busy, &st.epoch, &PyDict_Type, &st.triggers, &PyDict_Type,
                          &st.layouts))
        return NULL;
    if (PyBytes_GET_SIZE(prev) != 32) {
        PyErr_SetString(PyExc_ValueError, "prev must be 32 bytes");
        return NULL;
    }
    if (start < 0 || stop > PyList_GET_SIZE(lines) || start > stop) {
        PyErr_SetString(PyExc_ValueError, "start/stop outside the list of lines");
        return NULL;
    }
    memcpy(st.prev, PyBytes_AS_STRING(prev), 32);
    st.serial = PyBytes_AS_STRING(serial);
    st.serial_n = PyBytes_GET_SIZE(serial);
    leaves = PyList_New(0);
    if (!leaves) return NULL;
    for (i = start; i < stop; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i), *leaf;
        unsigned char h[32];
        int rc;
        if (!PyBytes_Check(line)) break;
        rc = accept(&st, PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line), i, h);
        if (rc < 0) goto done;
        if (rc == 0) break;
        leaf = PyBytes_FromStringAndSize((const char *)h, 32);
        if (!leaf || PyList_Append(leaves, leaf) < 0) {
            Py_XDECREF(leaf);
            goto done;
        }
        Py_DECREF(leaf);
    }
    out = Py_BuildValue("ny#OLLL", i, (const char *)st.prev, (Py_ssize_t)32, leaves, st.counter, st.clock, st.busy);
done:
    Py_DECREF(leaves);
    PyMem_Free(st.buf);
    return out;
}

/* ---------------------------------------------------------------- module */

static PyObject *py_sha256(PyObject *self, PyObject *arg) {
    Py_buffer b;
    unsigned char d[32];
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    sha256((const unsigned char *)b.buf, (size_t)b.len, d);
    PyBuffer_Release(&b);
    return PyBytes_FromStringAndSize((const char *)d, 32);
}

static PyObject *py_blake3(PyObject *self, PyObject *arg) {
    Py_buffer b;
    unsigned char d[32];
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    blake3((const unsigned char *)b.buf, (size_t)b.len, d);
    PyBuffer_Release(&b);
    return PyBytes_FromStringAndSize((const char *)d, 32);
}

static PyObject *sha256_backend(PyObject *self, PyObject *noargs) {
    return PyUnicode_FromString(use_libcrypto ? "libcrypto" : "builtin");
}

static PyObject *set_sha256_backend(PyObject *self, PyObject *arg) {
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    if (strcmp(name, "builtin") == 0) use_libcrypto = 0;
    else if (strcmp(name, "libcrypto") == 0 && libcrypto_sha256) use_libcrypto = 1;
    else {
        PyErr_Format(PyExc_ValueError, "SHA-256 backend %R is not available", arg);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"scan_snapshots", scan_snapshots, METH_VARARGS,
     "scan_snapshots(lines, start, stop, prev, serial, counter, boot, clock_ns, busy_ns, epoch, triggers, layouts)"
     " -> (end, prev, leaf_hashes, counter, clock_ns, busy_ns)"},
    {"sha256", py_sha256, METH_O, "SHA-256 of a bytes-like object (the backend in use)."},
    {"blake3", py_blake3, METH_O, "BLAKE3-256 of a bytes-like object."},
    {"sha256_backend", sha256_backend, METH_NOARGS, "\"libcrypto\" or \"builtin\"."},
    {"set_sha256_backend", set_sha256_backend, METH_O, "Choose \"libcrypto\" or \"builtin\" (tests)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_chiplog", "The chip-log audit's native fast path.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__chiplog(void) {
    /* hashlib's libcrypto, only if this process already loaded it (no new library is pulled in). */
    static const char *names[] = {"libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so", NULL};
    int i;
    for (i = 0; names[i] && !libcrypto_sha256; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_NOLOAD);
        if (h) libcrypto_sha256 = (sha256_fn)dlsym(h, "SHA256");
    }
    use_libcrypto = libcrypto_sha256 != NULL;
    return PyModule_Create(&module);
}
