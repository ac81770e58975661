/*
 * mx_quant.c - a small OCP MX v1.0 quantizer in C, checked against the golden vectors.
 *
 * Reads a flat export of a golden file (`mx-spec export-flat --out DIR`, see
 * golden/README.md) and writes a results JSON for `mx-spec verify`:
 *
 *     cc -std=c99 -O2 -o mx_quant mx_quant.c -lm
 *     ./mx_quant DIR/mxfp4_e2m1.flat.txt results.json
 *     mx-spec verify results.json --require mxfp4_e2m1,floor
 *
 * Scope: every format (FP8/FP6/FP4 and INT8, parameters from the flat header), the spec's
 * `floor` scale, `rne` and `away` element rounding, every input dtype, axis and block size
 * (ragged last blocks included), packed bytes.  Cases of other scale modes are not written, so
 * the verifier reports them as skipped.  Rules implemented (golden/README.md, Semantics):
 * X = floor(log2 amax) - emax from the exponent bits (frexp), clamped to [-127, 127]; all-zero
 * block X = -127; a block holding NaN or Inf gets scale 0xFF and element codes 0; elements are
 * x / 2^X rounded on the element grid and saturated to +-max normal; MXINT8 is symmetric (+-127).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char name[64], kind[8];
    int bits, ebits, mbits, bias, emax, emin;
    double max_normal;
} Format;

static void die(const char *what) {
    fprintf(stderr, "mx_quant: %s\n", what);
    exit(2);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    die("bad hex digit in input");
    return 0;
}

static uint64_t hex_item(const char *s, int digits) {
    uint64_t v = 0;
    for (int i = 0; i < digits; i++) v = (v << 4) | (uint64_t)hexval(s[i]);
    return v;
}

/* IEEE binary16 bit pattern -> double (exact). */
static double half_to_double(uint32_t h) {
    int sign = (h >> 15) & 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v;
    if (e == 0) v = ldexp((double)m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexp((double)(m | 0x400), e - 25);
    return sign ? -v : v;
}

static double input_value(const char *hex, long i, const char *dtype) {
    if (!strcmp(dtype, "float64")) {
        uint64_t b = hex_item(hex + 16 * i, 16);
        double d;
        memcpy(&d, &b, 8);
        return d;
    }
    if (!strcmp(dtype, "float32")) {
        uint32_t b = (uint32_t)hex_item(hex + 8 * i, 8);
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    if (!strcmp(dtype, "bfloat16")) {
        uint32_t b = (uint32_t)hex_item(hex + 4 * i, 4) << 16;
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    if (!strcmp(dtype, "float16")) return half_to_double((uint32_t)hex_item(hex + 4 * i, 4));
    die("unknown input dtype");
    return 0;
}

/* Element code of y = x / 2^X (already scaled): round on the grid, saturate, encode. */
static unsigned encode_element(double y, const Format *f, int away) {
    double a = fabs(y);
    int neg = signbit(y) != 0;
    if (a > f->max_normal) a = f->max_normal;
    unsigned mag = 0;
    if (a > 0) {
        int ea;
        frexp(a, &ea); /* a = m * 2^ea, m in [0.5, 1): floor(log2 a) = ea - 1 */
        int E = ea - 1 > f->emin ? ea - 1 : f->emin;
        int s = E - f->mbits; /* grid step 2^s in this binade (fixed below 2^emin) */
        double q = ldexp(a, -s); /* exact */
        double r = away ? round(q) : rint(q); /* round(): ties away; rint(): ties to even */
        double v = ldexp(r, s);
        if (v > f->max_normal) v = f->max_normal;
        if (!strcmp(f->kind, "int")) {
            mag = (unsigned)ldexp(v, f->mbits); /* two's complement byte of v * 64 */
            return neg ? (unsigned)((256 - mag) & 0xff) : mag;
        }
        if (v > 0 && v < ldexp(1.0, f->emin)) {
            mag = (unsigned)ldexp(v, f->mbits - f->emin); /* subnormal: exponent field 0 */
        } else if (v > 0) {
            int ev;
            frexp(v, &ev);
            unsigned m = (unsigned)(ldexp(v, f->mbits - (ev - 1)) - ldexp(1.0, f->mbits));
            mag = ((unsigned)(ev - 1 + f->bias) << f->mbits) | m;
        }
    }
    if (!strcmp(f->kind, "int")) return 0; /* no negative zero in two's complement */
    return mag | ((unsigned)neg << (f->bits - 1));
}

static void put_hex(FILE *out, const unsigned char *b, long n) {
    for (long i = 0; i < n; i++) fprintf(out, "%02x", b[i]);
}

int main(int argc, char **argv) {
    if (argc != 3) die("usage: mx_quant FLAT_FILE RESULTS_JSON");
    FILE *in = fopen(argv[1], "r");
    if (!in) die("cannot open the flat file");
    FILE *out = fopen(argv[2], "w");
    if (!out) die("cannot write the results file");
    char *line = NULL;
    size_t cap = 0;
    Format f;
    if (getline(&line, &cap, in) < 0 ||
        sscanf(line, "mx-spec-flat 1 %63s kind %7s bits %d ebits %d mbits %d bias %d emax %d emin %d max_normal %lf",
               f.name, f.kind, &f.bits, &f.ebits, &f.mbits, &f.bias, &f.emax, &f.emin, &f.max_normal) != 9)
        die("not an mx-spec-flat 1 file (regenerate it with `mx-spec export-flat`)");
    fprintf(out, "{\"cases\": [");
    int first = 1;
    while (getline(&line, &cap, in) > 0) {
        char id[256], mode[16], rounding[16], dtype[16];
        int block, axis, ndim, used;
        long dims[8], count;
        if (sscanf(line, "case %255s %15s %15s %d %d %15s %d%n", id, mode, rounding, &block, &axis, dtype, &ndim,
                   &used) != 7 || ndim < 1 || ndim > 8)
            die("bad case line");
        char *p = line + used;
        for (int d = 0; d < ndim; d++) dims[d] = strtol(p, &p, 10);
        count = strtol(p, &p, 10);
        if (getline(&line, &cap, in) < 0 || strncmp(line, "input", 5)) die("case without input line");
        const char *hex = line + 6;
        if (strcmp(mode, "floor")) continue; /* only the spec's scale rule: other modes are skipped */
        int away = !strcmp(rounding, "away");

        long outer = 1, inner = 1, n = dims[axis];
        for (int d = 0; d < axis; d++) outer *= dims[d];
        for (int d = axis + 1; d < ndim; d++) inner *= dims[d];
        long nb = (n + block - 1) / block;
        double *x = malloc(sizeof(double) * (count ? count : 1));
        unsigned char *codes = calloc(count ? count : 1, 1);
        unsigned char *scales = malloc(outer * nb * inner + 1);
        long nbytes = (count * f.bits + 7) / 8;
        unsigned char *packed = calloc(nbytes + 1, 1);
        for (long i = 0; i < count; i++) x[i] = input_value(hex, i, dtype);

        for (long o = 0; o < outer; o++)
            for (long j = 0; j < inner; j++)
                for (long b = 0; b < nb; b++) {
                    long lo = b * block, hi = lo + block < n ? lo + block : n;
                    double amax = 0;
                    int special = 0;
                    for (long i = lo; i < hi; i++) {
                        double v = x[(o * n + i) * inner + j];
                        if (isnan(v) || isinf(v)) special = 1;
                        else if (fabs(v) > amax) amax = fabs(v);
                    }
                    int X = -127;
                    if (amax > 0) {
                        int e;
                        frexp(amax, &e);
                        X = e - 1 - f.emax;
                    }
                    if (X < -127) X = -127;
                    if (X > 127) X = 127;
                    scales[(o * nb + b) * inner + j] = special ? 0xff : (unsigned char)(X + 127);
                    for (long i = lo; i < hi; i++) {
                        long k = (o * n + i) * inner + j;
                        codes[k] = special ? 0 : (unsigned char)encode_element(ldexp(x[k], -X), &f, away);
                    }
                }
        /* packed: block axis last, C order, one LSB-first bit stream across rows */
        long pos = 0;
        for (long o = 0; o < outer; o++)
            for (long j = 0; j < inner; j++)
                for (long i = 0; i < n; i++, pos += f.bits) {
                    unsigned c = codes[(o * n + i) * inner + j];
                    for (int bit = 0; bit < f.bits; bit++)
                        if (c >> bit & 1) packed[(pos + bit) / 8] |= (unsigned char)(1u << ((pos + bit) % 8));
                }

        fprintf(out, "%s\n  {\"id\": \"%s\", \"scales\": \"", first ? "" : ",", id);
        put_hex(out, scales, outer * nb * inner);
        fprintf(out, "\", \"elements\": \"");
        put_hex(out, codes, count);
        fprintf(out, "\", \"packed\": \"");
        put_hex(out, packed, nbytes);
        fprintf(out, "\"}");
        first = 0;
        free(x);
        free(codes);
        free(scales);
        free(packed);
    }
    fprintf(out, "\n]}\n");
    free(line);
    fclose(in);
    return fclose(out) ? 2 : 0;
}
