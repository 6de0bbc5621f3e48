/* The synthetic 7B-shaped allocation problem that bench_solve and
 * bench_search both time: 224 tensors (32 layers x q,k,v,o [4096x4096],
 * gate,up [11008x4096], down [4096x11008]) x the whole format menu (53
 * formats), with the packed sizes of docs/formats.md, a synthetic latency,
 * and synthetic errors that fall with bits, scaled by seeded per-layer and
 * per-tensor sensitivities. One definition, so the two benches time the
 * very same problem. Header-only: the benches are single-file programs. */
#ifndef BITPLAN_BENCH_PROBLEM_H
#define BITPLAN_BENCH_PROBLEM_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/solve.h"

#define BENCH_N_LAYERS 32
#define BENCH_MAX_FORMATS 64

typedef struct bench_fmt {
    char name[24];
    double q; /* "quality bits": error ~ 2^(-2q) */
    int kind; /* 0 int, 1 fp8, 2 mxfp4, 3 nvfp4, 4 f16, 5 bf16 */
    int bits, group, asym;
} bench_fmt;

typedef struct bench_rng {
    uint64_t s;
} bench_rng;

/* splitmix64, as a uniform double in [0, 1). */
static inline double bench_rng_unit(bench_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

static inline size_t bench_make_menu(bench_fmt *f)
{
    static const int widths[] = {2, 3, 4, 5, 6, 8};
    static const int groups[] = {32, 64, 128, 0};
    size_t n = 0;
    for (size_t w = 0; w < 6; w++)
        for (size_t g = 0; g < 4; g++)
            for (int a = 0; a < 2; a++) {
                bench_fmt *x = &f[n++];
                x->kind = 0;
                x->bits = widths[w];
                x->group = groups[g];
                x->asym = a;
                if (groups[g])
                    snprintf(x->name, sizeof x->name, "int%d_g%d_%s", widths[w], groups[g],
                             a ? "asym" : "sym");
                else
                    snprintf(x->name, sizeof x->name, "int%d_pc_%s", widths[w], a ? "asym" : "sym");
                double adj = groups[g] == 32 ? 0.45 : groups[g] == 64 ? 0.30 : groups[g] == 128 ? 0.15 : 0.0;
                x->q = widths[w] + adj + (a ? 0.25 : 0.0);
            }
    f[n++] = (bench_fmt){"fp8_e4m3", 6.4, 1, 8, 0, 0};
    f[n++] = (bench_fmt){"mxfp4", 3.55, 2, 4, 32, 0};
    f[n++] = (bench_fmt){"nvfp4", 4.05, 3, 4, 16, 0};
    f[n++] = (bench_fmt){"f16", 13.0, 4, 16, 0, 0};
    f[n++] = (bench_fmt){"bf16", 10.0, 5, 16, 0, 0};
    return n;
}

static inline double bench_fmt_bytes(const bench_fmt *f, double rows, double cols)
{
    double numel = rows * cols;
    switch (f->kind) {
    case 0: {
        double arrays = f->asym ? 2.0 : 1.0;
        double params = f->group ? numel / f->group * 2.0 : rows * 2.0;
        return numel * f->bits / 8.0 + params * arrays;
    }
    case 1:
        return numel + rows * 2.0;
    case 2:
        return numel / 2.0 + numel / 32.0;
    case 3:
        return numel / 2.0 + numel / 16.0 + 4.0;
    default:
        return 2.0 * numel;
    }
}

/* Synthetic kernel time (ns): bytes moved at 1 TB/s plus a per-format
 * dequantization overhead per element. Rounded to whole ns. */
static inline double bench_fmt_latency(const bench_fmt *f, double rows, double cols)
{
    double numel = rows * cols, over;
    switch (f->kind) {
    case 0:
        over = (f->bits == 3 || f->bits == 5 || f->bits == 6 ? 0.20 : 0.08) +
               (f->group == 32 ? 0.06 : f->group == 64 ? 0.03 : 0.0) + (f->asym ? 0.02 : 0.0);
        break;
    case 1:
        over = 0.02;
        break;
    case 2:
    case 3:
        over = 0.05;
        break;
    default:
        over = 0.0;
    }
    return round(bench_fmt_bytes(f, rows, cols) * 1e-3 + numel * over * 1e-3);
}

/* The seven tensor shapes of one layer, in item order. */
static const struct {
    const char *name;
    double rows, cols, sens; /* sens: relative sensitivity */
} bench_shapes[7] = {
    {"q_proj", 4096, 4096, 1.0},     {"k_proj", 4096, 4096, 1.2},
    {"v_proj", 4096, 4096, 2.5},     {"o_proj", 4096, 4096, 1.5},
    {"gate_proj", 11008, 4096, 1.0}, {"up_proj", 11008, 4096, 1.0},
    {"down_proj", 4096, 11008, 2.0},
};

static inline void bench_die(const char *what, const bp_error *e)
{
    fprintf(stderr, "%s: %s\n", what, e->msg);
    exit(1);
}

/* m = 1: bytes only; m = 2: bytes and latency (capped at lat_slack times
 * the latency of uniform int4_g128_sym). The byte budget is bpw bits per
 * weight. *numel_out = the number of weights. */
static inline bp_problem *bench_proxy_problem(size_t m, double bpw, double lat_slack, double *numel_out)
{
    bench_fmt menu[BENCH_MAX_FORMATS];
    size_t nf = bench_make_menu(menu);
    bp_problem *p = bp_problem_new(m);
    bench_rng r = {20240611};
    double numel_total = 0, lat_ref = 0;
    bp_error err;
    for (int l = 0; l < BENCH_N_LAYERS; l++) {
        /* Ends of the network are more sensitive, as usually measured. */
        double edge = (l < 2 || l >= BENCH_N_LAYERS - 2) ? 4.0 : 1.0;
        double s_layer = edge * exp(0.8 * (bench_rng_unit(&r) - 0.5));
        for (int t = 0; t < 7; t++) {
            char name[64];
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, bench_shapes[t].name);
            if (bp_problem_add_item(p, name, &err))
                bench_die("add_item", &err);
            double rows = bench_shapes[t].rows, cols = bench_shapes[t].cols, numel = rows * cols;
            numel_total += numel;
            double s = s_layer * bench_shapes[t].sens * exp(0.3 * (bench_rng_unit(&r) - 0.5));
            for (size_t k = 0; k < nf; k++) {
                double c[2] = {bench_fmt_bytes(&menu[k], rows, cols), bench_fmt_latency(&menu[k], rows, cols)};
                double noise = 0.9 + 0.2 * bench_rng_unit(&r);
                double e = s * numel * exp2(-2.0 * menu[k].q) * noise * 1e-6;
                if (bp_problem_add_choice(p, (int32_t)k, e, c, &err))
                    bench_die("add_choice", &err);
                if (strcmp(menu[k].name, "int4_g128_sym") == 0)
                    lat_ref += c[1];
            }
        }
    }
    if (bp_problem_set_constraint(p, 0, "bytes", floor(bpw * numel_total / 8.0), &err))
        bench_die("set_constraint", &err);
    if (m > 1 && bp_problem_set_constraint(p, 1, "latency_ns", round(lat_ref * lat_slack), &err))
        bench_die("set_constraint", &err);
    *numel_out = numel_total;
    return p;
}

#endif
